"""Initialising the modem and keeping it alive: the command sequences, over an AtLink.

Run after the port opens, after a reset is seen (``RDY``, ``+CFUN:``, ``+CPIN: READY``
unasked) and after repeated timeouts. Modems differ in what they take; each step
says what it does when a setting is refused.
"""

from __future__ import annotations

import structlog

from gateway.errors import ModemError, ModemTimeout
from gateway.registry.config import SmsSection
from gateway.transports.modem_link import AtLink, Reinitialise, timeouts_reinitialise
from gateway.transports.modem_status import ModemStatus, registration, rssi
from protocols.at import ESC, Response

log = structlog.get_logger("gateway.modem")

_SYNC_TIMEOUT_S = 1.0
_SYNC_ATTEMPTS = 10
_TIMEOUTS_BEFORE_REINIT = 2
CNMI_CHOICES = ("2,1,0,0,0", "1,1,0,0,0", "2,1,0,0", "1,1,0,0", "2,1", "1,1")
"""New messages stored and indicated (+CMTI), most modems' first choice first."""
CNMI_WITH_REPORTS = ("2,1,0,2,0", "1,1,0,2,0", "2,1,0,2", "1,1,0,2")
"""The same with status reports stored and indicated (+CDSI: ds=2), for sending."""


class ModemSetup:
    """The initialisation and keepalive sequences of one modem."""

    def __init__(
        self, link: AtLink, section: SmsSection, status: ModemStatus, *, reports: bool = False
    ) -> None:
        self._link = link
        self._section = section
        self._status = status
        self._reports = reports
        self.reports_enabled = False
        """The modem took a +CNMI setting that indicates status reports."""

    async def initialise(self) -> None:
        status = self._status
        link = self._link
        status.ready = False
        link.write(ESC + b"\r")  # cancel a prompt left open before we came
        await self._sync()
        await timeouts_reinitialise(link.at("ATE0"))
        await timeouts_reinitialise(link.at("AT+CMEE=1"))
        await self._unlock_sim()
        info = await timeouts_reinitialise(link.at("AT+CGMI"))
        status.manufacturer = info.lines[0] if info.final.ok and info.lines else ""
        info = await timeouts_reinitialise(link.at("AT+CGMM"))
        status.model = info.lines[0] if info.final.ok and info.lines else ""
        if "HUAWEI" in status.manufacturer.upper():
            await timeouts_reinitialise(link.at("AT^CURC=0"))  # no ^RSSI floods
        await link.checked("AT+CMGF=0")
        await self._select_storage()
        await self._indications()
        await self.keepalive(query_signal=True)
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
                response = await self._link.at("AT", wait_s=_SYNC_TIMEOUT_S)
            except ModemTimeout:
                continue
            if response.final.ok:
                return
        raise Reinitialise("no OK to AT")

    async def _unlock_sim(self) -> None:
        try:
            response = await self._link.at_retrying("AT+CPIN?")
        except ModemTimeout as exc:  # Wavecom answers +CPIN: READY without OK
            if exc.partial is None or not exc.partial.lines:
                raise Reinitialise("no answer to AT+CPIN?") from exc
            response = exc.partial
        state = (response.with_prefix("+CPIN:") or [""])[0]
        self._status.sim = state or str(response.final)
        if state == "READY":
            return
        if state == "SIM PIN" and self._section.pin:
            await self._link.checked(f'AT+CPIN="{self._section.pin}"')
            self._status.sim = "READY"
            return
        raise ModemError(f"SIM not ready: {self._status.sim}")

    async def _select_storage(self) -> None:
        """Read, write and receive to the storage the modem reads from now, and note it.

        A modem that refuses the setting keeps its own; messages are found by
        listing wherever they are, so this is not worth stopping for.
        """
        link = self._link
        current = await timeouts_reinitialise(link.at_retrying("AT+CPMS?"))
        values = (current.with_prefix("+CPMS:") or [""])[0]
        memory = values.split(",")[0].strip('"') or "SM"
        chosen = await timeouts_reinitialise(
            link.at_retrying(f'AT+CPMS="{memory}","{memory}","{memory}"')
        )
        self._status.storage = memory
        if chosen.final.ok:
            self.storage_counts(chosen)
        else:
            log.warning(
                "modem_storage_kept",
                storage=memory,
                result=str(chosen.final),
                action="none: messages are listed wherever the modem keeps them",
            )
            numbers = [int(v) for v in values.split(",")[1:3] if v.strip().isdigit()]
            if len(numbers) == 2:
                self._status.storage_used, self._status.storage_total = numbers

    async def _indications(self) -> None:
        """Store every new message and say where (+CMTI); modems differ in what they take.

        When sending, status reports are asked for the same way (stored, +CDSI) first.
        """
        self.reports_enabled = False
        choices = (CNMI_WITH_REPORTS if self._reports else ()) + CNMI_CHOICES
        for setting in choices:
            command = f"AT+CNMI={setting}"
            response = await timeouts_reinitialise(self._link.at_retrying(command))
            if response.final.ok:
                self.reports_enabled = setting in CNMI_WITH_REPORTS
                return
        log.warning("modem_no_indications", action="messages are found by the periodic sweep")

    async def keepalive(self, *, query_signal: bool) -> None:
        link = self._link
        try:
            if query_signal:
                csq = await link.at("AT+CSQ")
                values = (csq.with_prefix("+CSQ:") or [""])[0].split(",")
                self._status.signal_rssi = rssi(int(values[0]) if values[0].isdigit() else None)
                creg = await link.at("AT+CREG?")
                stat = registration((creg.with_prefix("+CREG:") or [""])[0], unsolicited=False)
                self._status.registration = stat
            else:
                await link.at("AT")
        except ModemTimeout as exc:
            if self._status.timeouts % _TIMEOUTS_BEFORE_REINIT == 0:
                raise Reinitialise(f"no answer to {exc.command}") from exc

    def storage_counts(self, response: Response) -> None:
        """Used and total of the first storage, from ``+CPMS:`` (asked or set)."""
        parts = (response.with_prefix("+CPMS:") or [""])[0].split(",")
        numbers = [int(v) for v in parts if v.strip().isdigit()]
        if len(numbers) >= 2:
            self._status.storage_used, self._status.storage_total = numbers[0], numbers[1]
