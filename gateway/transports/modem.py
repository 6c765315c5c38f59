"""The GSM modem on a serial port: AT over pyserial-asyncio-fast, SMS in, commit then delete.

A thin adapter around :class:`protocols.at.AtSession`: the port and the one command in
flight are :mod:`gateway.transports.modem_link`, initialisation and keepalive
:mod:`gateway.transports.modem_setup`. One task owns the port:

1. open it (a device path or ``socket://host:port``), reopening with capped
   backoff and jitter when it disappears (USB re-enumeration);
2. initialise the modem (:meth:`ModemSetup.initialise`), which also runs after a
   reset is seen (``RDY``, ``+CFUN:``, ``+CPIN: READY`` unasked) or after
   repeated timeouts;
3. read every stored message at start and every ``poll_interval_s``
   (``+CMGL=4``), because indications get lost in resets and downtime, and
   each ``+CMTI`` as it comes;
4. hand each PDU to the intake, which returns once what it carried is durably
   committed (or raises OutboxBusy), and only then delete it (``+CMGD``).

Whatever the modem does, this task never stops the rest of the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable

import serial
import structlog

from gateway.backoff import Backoff
from gateway.errors import (
    GatewayError,
    ModemError,
    ModemTimeout,
    OutboxBusy,
    SendRefused,
    SendUnknown,
)
from gateway.registry.config import SmsSection
from gateway.transports.modem_link import AtLink, Reinitialise, Reopen, timeouts_reinitialise
from gateway.transports.modem_setup import ModemSetup
from gateway.transports.modem_status import (
    ModemStatus,
    first_int,
    is_hex,
    last_int,
    registration,
    rssi,
)
from protocols.at import Response, Urc
from protocols.errors import SmsDecodeError
from protocols.sms_pdu import StatusReport, decode_pdu
from protocols.sms_submit import SubmitPart

log = structlog.get_logger("gateway.modem")

Take = Callable[[str, str], Awaitable[object]]
"""The intake: ``take(pdu_hex, source)``; returns once committed, raises OutboxBusy."""
Reports = Callable[[StatusReport], Awaitable[object]]
"""The status report sink: returns once what the report says is committed."""

SUBMIT_ANSWER_S = 60.0
"""How long a modem may take to hand an SMS to the network and answer ``+CMGS:``."""
TRANSIENT_CMS = frozenset({314, 332, 515})
"""SIM busy, network timeout, initialisation in progress: the same send may succeed later."""

_REINIT_BEFORE_REOPEN = 2
_SIGNAL_EVERY = 4  # keepalives between signal and registration queries
_RESET_URCS = frozenset({"RDY", "+CFUN"})
_MAX_WAITING = 1000  # indications beyond this wait for the next sweep


class Modem:
    def __init__(
        self,
        section: SmsSection,
        take: Take,
        reports: Reports | None = None,
        *,
        submit_answer_s: float = SUBMIT_ANSWER_S,
    ) -> None:
        self._section = section
        self._submit_answer_s = submit_answer_s
        self._take = take
        self._reports = reports
        self.status = ModemStatus()
        self._link = AtLink(section, self.status, self._on_urc)
        self._setup = ModemSetup(self._link, section, self.status, reports=reports is not None)
        self._indices: dict[int, None] = {}  # indicated, in order, each once
        self._routed: deque[str] = deque(maxlen=_MAX_WAITING)
        self._reset_seen = asyncio.Event()

    async def at(self, command: str, *, wait_s: float | None = None) -> Response:
        """Run one command and return its response (any final result); raise on timeout."""
        return await self._link.at(command, wait_s=wait_s)

    @property
    def reports_enabled(self) -> bool:
        """The modem took a +CNMI setting that stores and indicates status reports."""
        return self._setup.reports_enabled

    async def send(self, part: SubmitPart) -> int:
        """Send one SMS-SUBMIT (``AT+CMGS=<length>``, the PDU after the prompt, Ctrl-Z)
        and return its message reference (``+CMGS: <mr>``), which its status report
        carries. Waits its turn with the intake's commands: one command in flight.

        A durable queue commits its request as being sent *before* this call, so a
        crash while the command is out leaves a mark that it may have gone. Raises
        SendRefused when it was not sent (``transient``: SIM busy, network timeout,
        modem not ready; otherwise for good) and SendUnknown when it may have been.
        """
        if not self.status.ready:
            raise SendRefused("the modem is not ready", code=None, transient=True)
        response = await self._link.at_prompted(
            f"AT+CMGS={part.length}", part.pdu.encode("ascii"), answer_s=self._submit_answer_s
        )
        final = response.final
        if not final.ok:
            transient = final.busy or final.code in TRANSIENT_CMS
            self.status.sends_refused += 1
            raise SendRefused(f"AT+CMGS: {final}", code=final.code, transient=transient)
        reference = first_int((response.with_prefix("+CMGS:") or [""])[0])
        if reference is None:
            raise SendUnknown(f"{response.command}: OK without a reference: {response.lines}")
        self.status.sent += 1
        return reference

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(initial=0.5, cap=self._section.reopen_max_s)
        while True:
            try:
                await self._link.open()
            except (OSError, serial.SerialException, ValueError) as exc:
                self._note_error("modem_open_failed", exc, action="check the port and cable")
                await asyncio.sleep(backoff.next_delay())
                continue
            try:
                await self._serve(backoff)
            except Reopen as exc:
                self.status.reopens += 1
                self._note_error("modem_reopen", exc, action="the port is reopened by itself")
            finally:
                await self._link.close()
            await asyncio.sleep(backoff.next_delay())

    async def _serve(self, backoff: Backoff) -> None:
        reader = asyncio.create_task(self._link.read_loop(), name="modem-reader")
        try:
            failures = 0
            while True:
                try:
                    self._reset_seen.clear()
                    await self._setup.initialise()
                    backoff.reset()
                    failures = 0
                    await self._work()
                except (Reinitialise, ModemError) as exc:
                    failures += 1
                    self.status.ready = False
                    self._note_error("modem_reinitialise", exc, action="re-initialising")
                    if failures > _REINIT_BEFORE_REOPEN:
                        raise Reopen(f"{failures} initialisations failed: {exc}") from exc
                    if isinstance(exc, ModemError):
                        await asyncio.sleep(backoff.next_delay())
        finally:
            reader.cancel()
            await asyncio.wait({reader})  # raises only if this task is cancelled itself

    async def _work(self) -> None:
        """Take messages until a reset, a dead modem or a lost port interrupts."""
        await self.sweep()
        last_sweep = time.monotonic()
        idle_rounds = 0
        while True:
            self._raise_if_interrupted()
            if self._routed:
                await self._take_routed(self._routed.popleft())
            elif self._indices:
                index = next(iter(self._indices))
                del self._indices[index]
                await self._take_index(index)
            else:
                self._link.wake.clear()
                wait = min(self._section.keepalive_s, self._section.poll_interval_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._link.wake.wait(), wait)
                if not self._link.wake.is_set():
                    idle_rounds += 1
                    await self._setup.keepalive(query_signal=idle_rounds % _SIGNAL_EVERY == 0)
            if time.monotonic() - last_sweep >= self._section.poll_interval_s:
                await self.sweep()
                last_sweep = time.monotonic()

    def _raise_if_interrupted(self) -> None:
        if self._link.port_lost.is_set():
            raise Reopen("the port closed")
        if self._reset_seen.is_set():
            self._reset_seen.clear()
            raise Reinitialise("the modem reset")

    def _on_urc(self, urc: Urc) -> None:
        name = urc.name
        if name in ("+CMTI", "+CDSI"):
            index = last_int(urc.value)
            if index is not None and len(self._indices) < _MAX_WAITING:
                self._indices[index] = None  # a repeated indication is queued once
                self._link.wake.set()
        elif name in ("+CMT", "+CDS") and urc.body:
            # Routed without being stored: nothing to delete. The intake takes a
            # message once, should the modem also have stored it.
            self._routed.append(urc.body)
            self._link.wake.set()
        elif name in _RESET_URCS or (name == "+CPIN" and urc.value == "READY"):
            if self.status.ready:
                self.status.ready = False
                self.status.resets_seen += 1
                log.warning("modem_reset_seen", urc=urc.line, action="re-initialising")
                self._reset_seen.set()
                self._link.wake.set()
                self._link.fail_answer(Reinitialise("the modem reset"))
        elif name.startswith("^RSSI"):
            self.status.signal_rssi = rssi(last_int(urc.value))
        elif name in ("+CREG", "+CGREG", "+CEREG"):
            stat = registration(urc.value, unsolicited=True)
            if stat is not None:
                self.status.registration = stat

    async def _hand_over(self, pdu: str, source: str) -> None:
        """A status report to the report sink, any other PDU to the intake; returns once
        committed (raises what the sink raised)."""
        report = self._status_report(pdu)
        if report is not None and self._reports is not None:
            await self._reports(report)
            self.status.reports_taken += 1
            return
        await self._take(pdu, source)
        self.status.messages_taken += 1

    def _status_report(self, pdu: str) -> StatusReport | None:
        if self._reports is None:
            return None  # no sender: the intake takes (and quarantines) it as before
        try:
            message = decode_pdu(pdu)
        except SmsDecodeError:
            return None  # the intake keeps what it cannot read in quarantine
        return message if isinstance(message, StatusReport) else None

    async def _take_routed(self, pdu: str) -> None:
        try:
            await self._hand_over(pdu, "routed")
        except (GatewayError, ValueError) as exc:
            # Not stored on the modem: without a commit it is lost unless the
            # network resends. Logged loudly; CNMI asks modems to store first.
            log.error("modem_routed_message_lost", error=str(exc), action="check outbox space")

    # --- messages -----------------------------------------------------------------------

    async def sweep(self) -> None:
        """Take every message stored on the modem (+CMGL=4: all of them, read or not)."""
        response = await self._link.checked("AT+CMGL=4")
        lines = response.lines
        for i, line in enumerate(lines):
            if not line.startswith("+CMGL:"):
                continue
            index = first_int(line[len("+CMGL:") :])
            pdu = lines[i + 1] if i + 1 < len(lines) else ""
            if index is None:
                continue
            if is_hex(pdu):
                await self._take_pdu(index, pdu)
            else:  # a listing line without its PDU: read that message on its own
                await self._take_index(index)
        await self._refresh_storage()

    async def _take_index(self, index: int) -> None:
        response = await timeouts_reinitialise(self._link.at_retrying(f"AT+CMGR={index}"))
        if not response.final.ok:
            log.warning("modem_read_failed", index=index, result=str(response.final))
            return
        lines = response.lines
        for i, line in enumerate(lines):
            if line.startswith("+CMGR:") and i + 1 < len(lines) and is_hex(lines[i + 1]):
                await self._take_pdu(index, lines[i + 1])
                return
        # An empty slot: already taken and deleted (a repeated indication).

    async def _take_pdu(self, index: int, pdu: str) -> None:
        try:
            await self._hand_over(pdu, f"{self.status.storage}:{index}")
        except OutboxBusy as exc:
            log.warning(
                "sms_left_on_modem", index=index, error=str(exc), action="free outbox space"
            )
            return
        except Exception:  # a message the intake cannot handle stays; the rest go on
            log.exception("sms_intake_failed", index=index, action="report this as a bug")
            return
        response = await timeouts_reinitialise(self._link.at_retrying(f"AT+CMGD={index}"))
        if response.final.ok or response.final.code == 321:  # 321: already gone
            self.status.deletes += 1
        else:
            log.warning("modem_delete_failed", index=index, result=str(response.final))

    async def _refresh_storage(self) -> None:
        with contextlib.suppress(ModemTimeout):
            self._setup.storage_counts(await self._link.at("AT+CPMS?"))

    def _note_error(self, event: str, exc: BaseException, *, action: str) -> None:
        self.status.last_error = str(exc) or type(exc).__name__
        log.warning(event, port=self._section.port, error=self.status.last_error, action=action)
