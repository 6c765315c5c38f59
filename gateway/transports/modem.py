"""The GSM modem on a serial port: AT over pyserial-asyncio-fast, SMS in, commit then delete.

A thin adapter around :class:`protocols.at.AtSession`. One task owns the port:

1. open it (a device path or ``socket://host:port``), reopening with capped
   backoff and jitter when it disappears (USB re-enumeration);
2. initialise the modem (:meth:`Modem._initialise`), which also runs after a
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
import serial_asyncio_fast
import structlog

from gateway.backoff import Backoff
from gateway.errors import GatewayError, ModemError, ModemTimeout, OutboxBusy
from gateway.registry.config import SmsSection
from gateway.transports.modem_status import (
    ModemStatus,
    first_int,
    is_hex,
    last_int,
    registration,
    rssi,
)
from protocols.at import ESC, AtSession, Event, Prompt, Response, Stray, Urc

log = structlog.get_logger("gateway.modem")

Take = Callable[[str, str], Awaitable[object]]
"""The intake: ``take(pdu_hex, source)``; returns once committed, raises OutboxBusy."""

_SYNC_TIMEOUT_S = 1.0
_SYNC_ATTEMPTS = 10
_BUSY_RETRY_S = 60.0  # how long a SIM may stay busy before init gives up and starts over
_TIMEOUTS_BEFORE_REINIT = 2
_REINIT_BEFORE_REOPEN = 2
_SIGNAL_EVERY = 4  # keepalives between signal and registration queries
_CNMI_CHOICES = ("2,1,0,0,0", "1,1,0,0,0", "2,1,0,0", "1,1,0,0", "2,1", "1,1")
_RESET_URCS = frozenset({"RDY", "+CFUN"})
_MAX_WAITING = 1000  # indications beyond this wait for the next sweep


class _Reinitialise(Exception):
    """The modem reset or stopped answering: initialise it again."""


class _Reopen(Exception):
    """The port is gone or the modem is dead to it: close and open again."""


class Modem:
    def __init__(self, section: SmsSection, take: Take) -> None:
        self._section = section
        self._take = take
        self.status = ModemStatus()
        self._session = AtSession()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._answer: asyncio.Future[Response] | None = None
        self._indices: dict[int, None] = {}  # indicated, in order, each once
        self._routed: deque[str] = deque(maxlen=_MAX_WAITING)
        self._wake = asyncio.Event()
        self._reset_seen = asyncio.Event()
        self._port_lost = asyncio.Event()
        self._exchange = asyncio.Lock()

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(initial=0.5, cap=self._section.reopen_max_s)
        while True:
            try:
                await self._open()
            except (OSError, serial.SerialException, ValueError) as exc:
                self._note_error("modem_open_failed", exc, action="check the port and cable")
                await asyncio.sleep(backoff.next_delay())
                continue
            try:
                await self._serve(backoff)
            except _Reopen as exc:
                self.status.reopens += 1
                self._note_error("modem_reopen", exc, action="the port is reopened by itself")
            finally:
                await self._close()
            await asyncio.sleep(backoff.next_delay())

    async def _serve(self, backoff: Backoff) -> None:
        reader = asyncio.create_task(self._read_loop(), name="modem-reader")
        try:
            failures = 0
            while True:
                try:
                    await self._initialise()
                    backoff.reset()
                    failures = 0
                    await self._work()
                except (_Reinitialise, ModemError) as exc:
                    failures += 1
                    self.status.ready = False
                    self._note_error("modem_reinitialise", exc, action="re-initialising")
                    if failures > _REINIT_BEFORE_REOPEN:
                        raise _Reopen(f"{failures} initialisations failed: {exc}") from exc
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
                self._wake.clear()
                wait = min(self._section.keepalive_s, self._section.poll_interval_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                if not self._wake.is_set():
                    idle_rounds += 1
                    await self._keepalive(query_signal=idle_rounds % _SIGNAL_EVERY == 0)
            if time.monotonic() - last_sweep >= self._section.poll_interval_s:
                await self.sweep()
                last_sweep = time.monotonic()

    def _raise_if_interrupted(self) -> None:
        if self._port_lost.is_set():
            raise _Reopen("the port closed")
        if self._reset_seen.is_set():
            self._reset_seen.clear()
            raise _Reinitialise("the modem reset")

    # --- port -----------------------------------------------------------------------------

    async def _open(self) -> None:
        s = self._section
        self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
            url=s.port, baudrate=s.baudrate, rtscts=s.rtscts
        )
        self._session.reset()
        self._port_lost.clear()
        self._reset_seen.clear()
        self.status.port_open = True
        log.info("modem_port_open", port=s.port)

    async def _close(self) -> None:
        self.status.port_open = False
        self.status.ready = False
        self._fail_answer(ModemError("the port closed"))
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        self._reader = self._writer = None

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while data := await self._reader.read(4096):
                self.status.last_contact = time.time()
                for event in self._session.feed(data):
                    self._dispatch(event)
        except (OSError, serial.SerialException) as exc:
            log.warning("modem_port_lost", error=str(exc), action="the port is reopened by itself")
        self._port_lost.set()
        self._wake.set()
        self._fail_answer(ModemError("the port closed"))

    def _fail_answer(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Response):
            if self._answer is not None and not self._answer.done():
                self._answer.set_result(event)
        elif isinstance(event, Urc):
            self._on_urc(event)
        elif isinstance(event, Prompt):
            if self._writer is not None:
                self._writer.write(ESC)  # a text prompt nobody asked for: cancel it
        elif isinstance(event, Stray):
            log.debug("modem_stray_line", line=event.line)

    def _on_urc(self, urc: Urc) -> None:
        name = urc.name
        if name in ("+CMTI", "+CDSI"):
            index = last_int(urc.value)
            if index is not None and len(self._indices) < _MAX_WAITING:
                self._indices[index] = None  # a repeated indication is queued once
                self._wake.set()
        elif name in ("+CMT", "+CDS") and urc.body:
            # Routed without being stored: nothing to delete. The intake takes a
            # message once, should the modem also have stored it.
            self._routed.append(urc.body)
            self._wake.set()
        elif name in _RESET_URCS or (name == "+CPIN" and urc.value == "READY"):
            if self.status.ready:
                self.status.ready = False
                self.status.resets_seen += 1
                log.warning("modem_reset_seen", urc=urc.line, action="re-initialising")
                self._reset_seen.set()
                self._wake.set()
                if self._answer is not None and not self._answer.done():
                    self._answer.set_exception(_Reinitialise("the modem reset"))
        elif name.startswith("^RSSI"):
            self.status.signal_rssi = rssi(last_int(urc.value))
        elif name in ("+CREG", "+CGREG", "+CEREG"):
            stat = registration(urc.value, unsolicited=True)
            if stat is not None:
                self.status.registration = stat

    async def _take_routed(self, pdu: str) -> None:
        try:
            await self._take(pdu, "routed")
            self.status.messages_taken += 1
        except (GatewayError, ValueError) as exc:
            # Not stored on the modem: without a commit it is lost unless the
            # network resends. Logged loudly; CNMI asks modems to store first.
            log.error("modem_routed_message_lost", error=str(exc), action="check outbox space")

    # --- commands ---------------------------------------------------------------------

    async def at(self, command: str, *, wait_s: float | None = None) -> Response:
        """Run one command and return its response (any final result); raise on timeout."""
        async with self._exchange:
            if self._writer is None or self._port_lost.is_set():
                raise _Reopen("the port is closed")
            loop = asyncio.get_running_loop()
            self._answer = loop.create_future()
            self._writer.write(self._session.command(command))
            try:
                response = await asyncio.wait_for(
                    self._answer, wait_s or self._section.command_timeout_s
                )
            except TimeoutError:
                partial = self._session.abandon()
                self.status.timeouts += 1
                raise ModemTimeout(command, partial) from None
            except ModemError as exc:
                self._session.abandon()
                raise _Reopen(str(exc)) from exc
            except _Reinitialise:
                self._session.abandon()
                raise
            finally:
                self._answer = None
            return response

    async def at_retrying(self, command: str) -> Response:
        """Like :meth:`at`, retrying while the SIM is busy (CME 14, CMS 314/515)."""
        backoff = Backoff(initial=0.5, cap=5.0)
        deadline = time.monotonic() + _BUSY_RETRY_S
        while True:
            response = await self.at(command)
            if not response.final.busy or time.monotonic() > deadline:
                return response
            await asyncio.sleep(backoff.next_delay())

    async def _checked(self, command: str) -> Response:
        response = await self._timeouts_reinitialise(self.at_retrying(command))
        if not response.final.ok:
            raise ModemError(f"{command}: {response.final}")
        return response

    async def _timeouts_reinitialise(self, call: Awaitable[Response]) -> Response:
        try:
            return await call
        except ModemTimeout as exc:
            raise _Reinitialise(f"no answer to {exc.command}") from exc

    # --- initialisation ------------------------------------------------------------------

    async def _initialise(self) -> None:
        status = self.status
        status.ready = False
        self._reset_seen.clear()
        assert self._writer is not None
        self._writer.write(ESC + b"\r")  # cancel a prompt left open before we came
        await self._sync()
        await self._timeouts_reinitialise(self.at("ATE0"))
        await self._timeouts_reinitialise(self.at("AT+CMEE=1"))
        await self._unlock_sim()
        info = await self._timeouts_reinitialise(self.at("AT+CGMI"))
        status.manufacturer = info.lines[0] if info.final.ok and info.lines else ""
        info = await self._timeouts_reinitialise(self.at("AT+CGMM"))
        status.model = info.lines[0] if info.final.ok and info.lines else ""
        if "HUAWEI" in status.manufacturer.upper():
            await self._timeouts_reinitialise(self.at("AT^CURC=0"))  # no ^RSSI floods
        await self._checked("AT+CMGF=0")
        await self._select_storage()
        await self._indications()
        await self._keepalive(query_signal=True)
        status.ready = True
        log.info(
            "modem_ready",
            manufacturer=status.manufacturer,
            model=status.model,
            storage=status.storage,
            used=status.storage_used,
            total=status.storage_total,
            signal_dbm=status.signal_dbm,
            registered=status.registered,
        )

    async def _sync(self) -> None:
        for _ in range(_SYNC_ATTEMPTS):
            try:
                response = await self.at("AT", wait_s=_SYNC_TIMEOUT_S)
            except ModemTimeout:
                continue
            if response.final.ok:
                return
        raise _Reinitialise("no OK to AT")

    async def _unlock_sim(self) -> None:
        try:
            response = await self.at_retrying("AT+CPIN?")
        except ModemTimeout as exc:  # Wavecom answers +CPIN: READY without OK
            if exc.partial is None or not exc.partial.lines:
                raise _Reinitialise("no answer to AT+CPIN?") from exc
            response = exc.partial
        state = (response.with_prefix("+CPIN:") or [""])[0]
        self.status.sim = state or str(response.final)
        if state == "READY":
            return
        if state == "SIM PIN" and self._section.pin:
            await self._checked(f'AT+CPIN="{self._section.pin}"')
            self.status.sim = "READY"
            return
        raise ModemError(f"SIM not ready: {self.status.sim}")

    async def _select_storage(self) -> None:
        """Read, write and receive to the storage the modem reads from now, and note it.

        A modem that refuses the setting keeps its own; messages are found by
        listing wherever they are, so this is not worth stopping for.
        """
        current = await self._timeouts_reinitialise(self.at_retrying("AT+CPMS?"))
        values = (current.with_prefix("+CPMS:") or [""])[0]
        memory = values.split(",")[0].strip('"') or "SM"
        chosen = await self._timeouts_reinitialise(
            self.at_retrying(f'AT+CPMS="{memory}","{memory}","{memory}"')
        )
        self.status.storage = memory
        if chosen.final.ok:
            self._storage_counts(chosen)
        else:
            log.warning(
                "modem_storage_kept",
                storage=memory,
                result=str(chosen.final),
                action="none: messages are listed wherever the modem keeps them",
            )
            numbers = [int(v) for v in values.split(",")[1:3] if v.strip().isdigit()]
            if len(numbers) == 2:
                self.status.storage_used, self.status.storage_total = numbers

    async def _indications(self) -> None:
        """Store every new message and say where (+CMTI); modems differ in what they take."""
        for setting in _CNMI_CHOICES:
            response = await self._timeouts_reinitialise(self.at_retrying(f"AT+CNMI={setting}"))
            if response.final.ok:
                return
        log.warning("modem_no_indications", action="messages are found by the periodic sweep")

    async def _keepalive(self, *, query_signal: bool) -> None:
        try:
            if query_signal:
                csq = await self.at("AT+CSQ")
                values = (csq.with_prefix("+CSQ:") or [""])[0].split(",")
                self.status.signal_rssi = rssi(int(values[0]) if values[0].isdigit() else None)
                creg = await self.at("AT+CREG?")
                stat = registration((creg.with_prefix("+CREG:") or [""])[0], unsolicited=False)
                self.status.registration = stat
            else:
                await self.at("AT")
        except ModemTimeout as exc:
            if self.status.timeouts % _TIMEOUTS_BEFORE_REINIT == 0:
                raise _Reinitialise(f"no answer to {exc.command}") from exc

    # --- messages -----------------------------------------------------------------------

    async def sweep(self) -> None:
        """Take every message stored on the modem (+CMGL=4: all of them, read or not)."""
        response = await self._checked("AT+CMGL=4")
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
        response = await self._timeouts_reinitialise(self.at_retrying(f"AT+CMGR={index}"))
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
            await self._take(pdu, f"{self.status.storage}:{index}")
        except OutboxBusy as exc:
            log.warning(
                "sms_left_on_modem", index=index, error=str(exc), action="free outbox space"
            )
            return
        except Exception:  # a message the intake cannot handle stays; the rest go on
            log.exception("sms_intake_failed", index=index, action="report this as a bug")
            return
        self.status.messages_taken += 1
        response = await self._timeouts_reinitialise(self.at_retrying(f"AT+CMGD={index}"))
        if response.final.ok or response.final.code == 321:  # 321: already gone
            self.status.deletes += 1
        else:
            log.warning("modem_delete_failed", index=index, result=str(response.final))

    async def _refresh_storage(self) -> None:
        with contextlib.suppress(ModemTimeout):
            self._storage_counts(await self.at("AT+CPMS?"))

    def _storage_counts(self, response: Response) -> None:
        """Used and total of the first storage, from ``+CPMS:`` (asked or set)."""
        parts = (response.with_prefix("+CPMS:") or [""])[0].split(",")
        numbers = [int(v) for v in parts if v.strip().isdigit()]
        if len(numbers) >= 2:
            self.status.storage_used, self.status.storage_total = numbers[0], numbers[1]

    def _note_error(self, event: str, exc: BaseException, *, action: str) -> None:
        self.status.last_error = str(exc) or type(exc).__name__
        log.warning(event, port=self._section.port, error=self.status.last_error, action=action)
