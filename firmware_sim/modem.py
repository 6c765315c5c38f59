"""A simulated GSM modem: an AT command interpreter with SMS storage. The servers
that put it behind a pseudo-terminal or a TCP port (``socket://`` for pyserial) are in
:mod:`firmware_sim.modem_server`.

``ModemCore`` is sans-I/O: ``receive(bytes)`` takes what the gateway writes,
``deliver(pdu_hex)`` takes what the network sends, ``tick()`` lets time pass on
the clock you gave it, and ``take_output()`` returns the bytes the modem sends.
``next_deadline()`` says when ``tick`` has something to do. The servers only move
bytes and call ``tick`` on time::

    async with PtyModemServer(ModemProfile.preset("huawei"), link=Path("/tmp/ttyMODEM")) as modem:
        serial.Serial(modem.path)                    # the gateway's side
        modem.deliver(pdu_hex)                       # an SMS arrives: +CMTI
        modem.storage(); modem.counters              # what is stored, what happened

    async with SocketModemServer(port=7701) as modem:
        serial.serial_for_url(modem.url)             # "socket://127.0.0.1:7701"

On the wire (PDU mode), as real modems do it::

    -> AT+CSQ\\r
    <- AT+CSQ\\r                       echo, until ATE0
    <- \\r\\n+CSQ: 20,99\\r\\n\\r\\nOK\\r\\n    info lines, then the final result
    <- \\r\\n+CMTI: "SM",1\\r\\n            unsolicited (URC), between answers

Storage is one list of slots shared by every memory name (SM/ME/MT). Messages the
storage has no room for stay with the network, which tries again every
``network_retry_s``: the sim never loses a message. Messages that come while the
SIM is not ready wait the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import ClassVar

from firmware_sim.modem_general import GeneralCommands
from firmware_sim.modem_parse import check_pdu, is_error, parse_extended, split_commands
from firmware_sim.modem_profiles import GENERIC, ModemProfile
from firmware_sim.modem_sms import SmsCommands
from firmware_sim.modem_state import (
    CTRL_Z,
    ESC,
    MAX_LINE,
    PROMPT,
    SIM_COMMANDS,
    Answer,
    Clock,
    FinalResult,
    ModemCounters,
    StoredMessage,
)

__all__ = ["Clock", "ModemCore", "ModemCounters", "StoredMessage"]

_Handler = Callable[["ModemCore", str, list[str]], Answer]


class ModemCore(GeneralCommands, SmsCommands):
    """The modem, bytes in and bytes out, on a clock you pass in. Not thread-safe."""

    def __init__(
        self,
        profile: ModemProfile = GENERIC,
        *,
        clock: Clock = time.monotonic,
        pin: str | None = None,
    ) -> None:
        super().__init__(profile, clock=clock, pin=pin)
        self._boot(first=True)

    def receive(self, data: bytes) -> None:
        """Bytes the DTE (the gateway) wrote."""
        for byte in data:
            if self.hung:
                return
            if self._prompt is not None:
                self._prompt_byte(byte)
                continue
            if self.settings.echo:
                self._out.append(byte)
            if byte == 0x0D:
                line, self._line = bytes(self._line), bytearray()
                self._command_line(line.decode("latin-1").strip())
            elif byte == 0x08:
                del self._line[-1:]
            elif byte not in (0x0A, ESC, CTRL_Z) and len(self._line) < MAX_LINE:
                self._line.append(byte)

    def take_output(self) -> bytes:
        """Bytes the modem sent since the last call."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def tick(self) -> None:
        """Let time pass: end a hang, finish SIM start-up, periodic URCs, network retries."""
        now = self.clock()
        if self._hang_until != -math.inf and now >= self._hang_until:
            self._hang_until = -math.inf
        if self.hung:
            return
        if self._sim_state != "ready" and now >= self._sim_ready_at:
            if self._pin_ok:
                self._sim_ready()
            elif self._sim_state == "busy":
                self._sim_state = "pin"
                self._emit_line("+CPIN: SIM PIN")
        if now >= self._next_rssi:
            if self.settings.curc:
                self._urc(f"^RSSI:{self.signal}")
            self._next_rssi = now + self.profile.rssi_every_s
        if self._urc_queue and now >= self._urc_queue[0][0] + self.profile.urc_hold_s:
            self._flush_urcs()
        if self.held and now >= self._next_retry:
            self._retry_held()
        for report in self.network.due_reports(now):
            self._status_report(report)

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do next (clock time), or None."""
        deadlines = [self._next_rssi]
        if self.hung:
            return self._hang_until
        if self._sim_state == "busy":
            deadlines.append(self._sim_ready_at)
        if self._urc_queue:
            deadlines.append(self._urc_queue[0][0] + self.profile.urc_hold_s)
        if self.held:
            deadlines.append(self._next_retry)
        report_due = self.network.next_due()
        if report_due is not None:
            deadlines.append(report_due)
        soonest = min(deadlines)
        return None if soonest == math.inf else soonest

    def deliver(self, pdu_hex: str) -> None:
        """The network delivers an SMS-DELIVER (hex, SMSC field first)."""
        pdu = pdu_hex.strip().upper()
        check_pdu(pdu)
        self.counters.offered += 1
        self._offer(pdu)

    def reset(self) -> None:
        """A spontaneous reset: ``RDY`` (the boot URCs), settings forgotten, storage kept."""
        self._boot(first=False)

    def _boot(self, *, first: bool) -> None:
        now = self.clock()
        if not first:
            self.counters.resets += 1
        self.settings = self._defaults()
        self._hang_until = -math.inf
        self._line.clear()
        self._prompt = None
        self._urc_queue.clear()
        self._pin_ok = self.pin is None
        self._sim_state = "busy"
        self._sim_ready_at = now + self.profile.sim_busy_s
        rssi = self.profile.rssi_every_s
        self._next_rssi = now + rssi if rssi > 0 else math.inf
        for urc in self.profile.boot_urcs:
            self._emit_line(urc)
        self.tick()

    def _sim_ready(self) -> None:
        self._sim_state = "ready"
        for urc in self.profile.ready_urcs:
            self._emit_line(urc)
        if self.held:
            self._retry_held()

    def _prompt_byte(self, byte: int) -> None:
        assert self._prompt is not None
        prompt = self._prompt
        if byte == ESC:
            self._prompt = None
            self._answer([], None)
        elif byte == CTRL_Z:
            self._prompt = None
            self._answer(*self._submit(prompt))
        elif byte not in (0x0D, 0x0A) and len(prompt.data) < MAX_LINE:
            prompt.data.append(byte)

    def _command_line(self, line: str) -> None:
        if len(line) < 2 or line[:2].upper() != "AT":
            return  # modems ignore what does not start with AT
        self.counters.commands += 1
        if self.counters.commands == self.profile.hang_on_command:
            self.hang(self.profile.hang_s)
            return
        info: list[str] = []
        final: FinalResult | None = None
        after: Callable[[], None] | None = None
        for command in split_commands(line[2:]):
            lines, final = self._execute(command)
            info += lines
            if final is not None:
                break
            if command.upper().startswith("+CFUN=") and command.endswith(",1"):
                after = self.reset
        if info and info[0].startswith("+CMGR:") and not is_error(final):
            self._cmgr_count += 1
            if self._cmgr_count == self.profile.reset_on_cmgr:
                answer = self._render(info, final)
                self._out += answer[: self.profile.reset_cut_at]
                self.reset()
                return
        self._answer(info, final)
        if after is not None:
            after()
        self.tick()

    def _render(self, info: list[str], final: FinalResult | None) -> bytes:
        eol = self.profile.eol
        out = ""
        if info:
            out += eol + eol.join(info) + eol
            self._info_answers += 1
            every = self.profile.creg_in_response_every
            if every and self._info_answers % every == 0:
                out += f"{eol}+CREG: 1{eol}"
            if self._urc_queue:
                out += "".join(f"{eol}{text}{eol}" for _, text in self._urc_queue)
                self._urc_queue.clear()
        if final is None:
            out += f"{eol}OK{eol}"
        elif final is PROMPT:
            out += f"{eol}> "
        elif final.text is not None:
            out += f"{eol}{final.text}{eol}"
        return out.encode("latin-1")

    def _answer(self, info: list[str], final: FinalResult | None) -> None:
        self._out += self._render(info, final)

    def _execute(self, command: str) -> Answer:
        """One command of a line: (info lines, None for OK or the final result)."""
        error = FinalResult("ERROR")
        if not command:
            return [], None
        if command[0] not in "+^#":
            return self._basic(command.upper())
        name, op, args = parse_extended(command)
        if name in SIM_COMMANDS or (name == "+CPIN" and op == "?"):
            if self._sim_state == "busy":
                return [], self._cme(14)
            if self._sim_state == "pin" and not self._pin_ok and name != "+CPIN":
                return [], self._cme(11)
        handler = self._HANDLERS.get(name)
        if handler is None or (name == "^CURC" and not self.profile.huawei_curc):
            return [], FinalResult(self.profile.unknown_command)
        try:
            return handler(self, op, args)
        except (ValueError, IndexError):
            return [], error

    _HANDLERS: ClassVar[dict[str, _Handler]] = {
        "+CMEE": GeneralCommands._at_cmee,
        "+CPIN": GeneralCommands._at_cpin,
        "+CFUN": GeneralCommands._at_cfun,
        "+CGMI": GeneralCommands._at_cgmi,
        "+GMI": GeneralCommands._at_cgmi,
        "+CGMM": GeneralCommands._at_cgmm,
        "+GMM": GeneralCommands._at_cgmm,
        "+CGMR": GeneralCommands._at_cgmr,
        "+CGSN": GeneralCommands._at_cgsn,
        "+CMGF": GeneralCommands._at_cmgf,
        "+CPMS": SmsCommands._at_cpms,
        "+CNMI": GeneralCommands._at_cnmi,
        "+CSQ": GeneralCommands._at_csq,
        "+CREG": GeneralCommands._at_creg,
        "^CURC": GeneralCommands._at_curc,
        "+CMGL": SmsCommands._at_cmgl,
        "+CMGR": SmsCommands._at_cmgr,
        "+CMGD": SmsCommands._at_cmgd,
        "+CMGS": SmsCommands._at_cmgs,
        "+CMGW": SmsCommands._at_cmgw,
    }
