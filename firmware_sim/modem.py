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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import structlog

from firmware_sim.modem_profiles import GENERIC, ModemProfile
from firmware_sim.sms_pdu import tpdu_length

Clock = Callable[[], float]
"""Seconds, monotonic (``time.monotonic`` unless a test passes a fake clock)."""

CTRL_Z = 0x1A
ESC = 0x1B
MAX_LINE = 4096
STAT_NAMES = {0: "REC UNREAD", 1: "REC READ", 2: "STO UNSENT", 3: "STO SENT"}

CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    14: "SIM busy",
    16: "incorrect password",
    50: "Incorrect parameters",
}
CMS_TEXT = {
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    314: "SIM busy",
    321: "invalid memory index",
    322: "memory full",
}

SIM_COMMANDS = frozenset({"+CPMS", "+CMGL", "+CMGR", "+CMGD", "+CMGW", "+CMGS", "+CNMI"})
"""SMS commands that need a ready SIM (``+CME ERROR: 14`` while busy, 11 before the PIN)."""

log = structlog.get_logger("firmware_sim.modem")


@dataclass(slots=True)
class StoredMessage:
    """One storage slot's content: ``stat`` 0 unread, 1 read, 2 unsent, 3 sent."""

    pdu: str
    stat: int = 0

    @property
    def length(self) -> int:
        return tpdu_length(self.pdu)


@dataclass(slots=True)
class ModemCounters:
    """What the modem did since it was made (resets do not clear these)."""

    offered: int = 0
    """Messages the network handed to ``deliver``."""
    delivered: int = 0
    """Messages put into storage (each once, however often it was held back first)."""
    routed: int = 0
    """``+CMT`` indications (messages also stored: process once)."""
    held_back: int = 0
    """Delivery attempts refused because storage was full or the SIM not ready."""
    deleted: int = 0
    empty_reads: int = 0
    """``AT+CMGR`` of an empty slot."""
    empty_deletes: int = 0
    """``AT+CMGD`` of an empty slot (answered 321)."""
    resets: int = 0
    commands: int = 0
    urcs_lost: int = 0
    """URCs that came up while the modem hung."""
    submitted: list[str] = field(default_factory=list)
    """PDUs the gateway sent with ``AT+CMGS`` (it should never send any)."""


@dataclass(slots=True)
class _Settings:
    """What a reset or ATZ forgets."""

    echo: bool
    cmee: int = 0
    cmgf: int = 0
    cnmi: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    creg: int = 0
    curc: bool = True
    mems: tuple[str, str, str] = ("SM", "SM", "SM")


@dataclass(slots=True)
class _Prompt:
    command: str
    length: int
    data: bytearray = field(default_factory=bytearray)


class _Final:
    """A command's outcome when it is not OK."""

    __slots__ = ("text",)

    def __init__(self, text: str | None) -> None:
        self.text = text  # None: no final result at all (Wavecom's +CPIN?)


_NO_FINAL = _Final(None)
_PROMPT = _Final("> ")


_Handler = Callable[["ModemCore", str, list[str]], tuple[list[str], "_Final | None"]]


class ModemCore:
    """The modem, bytes in and bytes out, on a clock you pass in. Not thread-safe."""

    def __init__(
        self,
        profile: ModemProfile = GENERIC,
        *,
        clock: Clock = time.monotonic,
        pin: str | None = None,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.pin = pin
        self.counters = ModemCounters()
        self.slots: list[StoredMessage | None] = [None] * profile.capacity
        self.held: deque[str] = deque()
        """Messages the network still has to deliver, oldest first."""
        self.signal = profile.signal
        self.settings = _Settings(echo=profile.echo_default)
        self._out = bytearray()
        self._line = bytearray()
        self._prompt: _Prompt | None = None
        self._hang_until = -math.inf
        self._sim_ready_at = 0.0
        self._pin_ok = pin is None
        self._sim_state = "busy"  # busy -> (pin ->) ready
        self._urc_queue: list[tuple[float, str]] = []
        self._next_rssi = math.inf
        self._next_retry = math.inf
        self._cmgr_count = 0
        self._info_answers = 0
        self._mr = 0
        self._boot(first=True)

    # ------------------------------------------------------------ the I/O surface

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
        soonest = min(deadlines)
        return None if soonest == math.inf else soonest

    # ------------------------------------------------------------ control (the network, the lab)

    def deliver(self, pdu_hex: str) -> None:
        """The network delivers an SMS-DELIVER (hex, SMSC field first)."""
        pdu = pdu_hex.strip().upper()
        _check_pdu(pdu)
        self.counters.offered += 1
        if self.held:
            self.held.append(pdu)  # keep the network's order
            self.counters.held_back += 1
            return
        if not self._store_delivered(pdu):
            self.held.append(pdu)
            self._next_retry = self.clock() + self.profile.network_retry_s

    def reset(self) -> None:
        """A spontaneous reset: ``RDY`` (the boot URCs), settings forgotten, storage kept."""
        self._boot(first=False)

    def hang(self, seconds: float) -> None:
        """Stop answering (input ignored, nothing sent) for ``seconds``."""
        self._hang_until = self.clock() + seconds
        self._line.clear()
        self._prompt = None

    @property
    def hung(self) -> bool:
        return self.clock() < self._hang_until

    @property
    def sim_ready(self) -> bool:
        return self._sim_state == "ready"

    def storage(self) -> dict[int, StoredMessage]:
        """Index (as the modem numbers it) to stored message."""
        first = self.profile.first_index
        return {i + first: m for i, m in enumerate(self.slots) if m is not None}

    @property
    def stored_now(self) -> int:
        return sum(1 for m in self.slots if m is not None)

    # ------------------------------------------------------------ internals: boot and SIM

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

    def _defaults(self) -> _Settings:
        return _Settings(
            echo=self.profile.echo_default,
            cmgf=self.profile.cmgf_default,
            cnmi=self.profile.cnmi_default,
        )

    def _sim_ready(self) -> None:
        self._sim_state = "ready"
        for urc in self.profile.ready_urcs:
            self._emit_line(urc)
        if self.held:
            self._retry_held()

    # ------------------------------------------------------------ internals: storage

    def _store_delivered(self, pdu: str) -> bool:
        """Store a message coming from the network and indicate it; False: no room."""
        if not self.sim_ready:
            self.counters.held_back += 1
            return False
        index = self._free_slot()
        if index is None:
            self.counters.held_back += 1
            return False
        self.slots[index] = StoredMessage(pdu)
        self.counters.delivered += 1
        mt = self.settings.cnmi[1]
        every = self.profile.cmt_copy_every
        if mt == 2 and every and self.counters.delivered % every == 0:
            self.counters.routed += 1
            self._urc(f"+CMT: ,{tpdu_length(pdu)}", pdu)
        if mt != 0:
            self._urc(f'+CMTI: "{self.settings.mems[2]}",{index + self.profile.first_index}')
        return True

    def _retry_held(self) -> None:
        while self.held and self._store_delivered(self.held[0]):
            self.held.popleft()
        self._next_retry = self.clock() + self.profile.network_retry_s

    def _free_slot(self) -> int | None:
        return next((i for i, m in enumerate(self.slots) if m is None), None)

    def _slot(self, text: str) -> int | None:
        """A slot number from the modem's index, or None when out of range."""
        try:
            index = int(text) - self.profile.first_index
        except ValueError:
            return None
        return index if 0 <= index < len(self.slots) else None

    # ------------------------------------------------------------ internals: output

    def _emit_line(self, text: str) -> None:
        if self.hung:
            self.counters.urcs_lost += 1
            return
        eol = self.profile.eol
        self._out += f"{eol}{text}{eol}".encode("latin-1")

    def _urc(self, *lines: str) -> None:
        """An unsolicited result (several lines: a +CMT and its PDU)."""
        if self.hung:
            self.counters.urcs_lost += 1
        elif self.profile.urc_in_response:
            self._urc_queue.append((self.clock(), self.profile.eol.join(lines)))
        else:
            self._emit_line(self.profile.eol.join(lines))

    def _flush_urcs(self) -> None:
        queued, self._urc_queue = self._urc_queue, []
        for _, text in queued:
            self._emit_line(text)

    # ------------------------------------------------------------ internals: commands

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

    def _submit(self, prompt: _Prompt) -> tuple[list[str], _Final | None]:
        pdu = prompt.data.decode("latin-1").strip().upper()
        try:
            _check_pdu(pdu)
        except ValueError:
            return [], self._cms(304)
        if tpdu_length(pdu) != prompt.length:
            return [], self._cms(304)
        if prompt.command == "+CMGS":
            self.counters.submitted.append(pdu)
            self._mr = (self._mr + 1) % 256
            return [f"+CMGS: {self._mr}"], None
        index = self._free_slot()
        if index is None:
            return [], self._cms(322)
        self.slots[index] = StoredMessage(pdu, stat=2)
        return [f"+CMGW: {index + self.profile.first_index}"], None

    def _command_line(self, line: str) -> None:
        if len(line) < 2 or line[:2].upper() != "AT":
            return  # modems ignore what does not start with AT
        self.counters.commands += 1
        if self.counters.commands == self.profile.hang_on_command:
            self.hang(self.profile.hang_s)
            return
        info: list[str] = []
        final: _Final | None = None
        after: Callable[[], None] | None = None
        for command in _split_commands(line[2:]):
            lines, final = self._execute(command)
            info += lines
            if final is not None:
                break
            if command.upper().startswith("+CFUN=") and command.endswith(",1"):
                after = self.reset
        if info and info[0].startswith("+CMGR:") and not _is_error(final):
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

    def _render(self, info: list[str], final: _Final | None) -> bytes:
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
        elif final is _PROMPT:
            out += f"{eol}> "
        elif final.text is not None:
            out += f"{eol}{final.text}{eol}"
        return out.encode("latin-1")

    def _answer(self, info: list[str], final: _Final | None) -> None:
        self._out += self._render(info, final)

    def _cme(self, code: int) -> _Final:
        if self.settings.cmee == 0:
            return _Final("ERROR")
        if self.settings.cmee == 2:
            return _Final(f"+CME ERROR: {CME_TEXT.get(code, 'unknown')}")
        return _Final(f"+CME ERROR: {code}")

    def _cms(self, code: int) -> _Final:
        if self.settings.cmee == 2:
            return _Final(f"+CMS ERROR: {CMS_TEXT.get(code, 'unknown error')}")
        return _Final(f"+CMS ERROR: {code}")

    def _execute(self, command: str) -> tuple[list[str], _Final | None]:
        """One command of a line: (info lines, None for OK or the final result)."""
        error = _Final("ERROR")
        if not command:
            return [], None
        if command[0] not in "+^#":
            return self._basic(command.upper())
        name, op, args = _parse_extended(command)
        if name in SIM_COMMANDS or (name == "+CPIN" and op == "?"):
            if self._sim_state == "busy":
                return [], self._cme(14)
            if self._sim_state == "pin" and not self._pin_ok and name != "+CPIN":
                return [], self._cme(11)
        handler = self._HANDLERS.get(name)
        if handler is None or (name == "^CURC" and not self.profile.huawei_curc):
            return [], _Final(self.profile.unknown_command)
        try:
            return handler(self, op, args)
        except (ValueError, IndexError):
            return [], error

    def _basic(self, command: str) -> tuple[list[str], _Final | None]:
        p = self.profile
        for letter, digits in _basic_parts(command):
            if letter == "E" and digits in ("", "0", "1"):
                self.settings.echo = digits == "1"
            elif letter in ("Z", "&F") and digits in ("", "0"):
                self.settings = self._defaults()
            elif letter == "I" and digits in ("", "0"):
                return [p.manufacturer, p.model, f"Revision: {p.revision}"], None
            elif not ((letter in ("V", "Q") and digits in ("", "0", "1")) or letter == "&W"):
                return [], _Final(p.unknown_command)
        return [], None

    # -- extended commands: (self, op, args) -> (info, final); op is "", "?", "=?" or "="

    def _at_cmee(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "?":
            return [f"+CMEE: {self.settings.cmee}"], None
        if op == "=?":
            return ["+CMEE: (0-2)"], None
        value = int(args[0]) if op == "=" else 0
        if value not in (0, 1, 2):
            raise ValueError(value)
        self.settings.cmee = value
        return [], None

    def _at_cpin(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "?":
            state = "READY" if self._sim_state == "ready" else "SIM PIN"
            return [f"+CPIN: {state}"], _NO_FINAL if self.profile.wavecom_cpin else None
        if op == "=?":
            return [], None
        if op != "=" or self._sim_state == "ready":
            return [], self._cme(3)
        if self._sim_state == "busy":
            return [], self._cme(14)
        if args[0].strip('"') != self.pin:
            return [], self._cme(16)
        self._pin_ok = True  # the ready URCs follow the OK (tick after the answer)
        return [], None

    def _at_cfun(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "?":
            return ["+CFUN: 1"], None
        if op == "=?":
            return ["+CFUN: (0,1,4),(0-1)"], None
        if op != "=" or int(args[0]) not in (0, 1, 4):
            raise ValueError(op)
        return [], None  # "+CFUN=1,1" resets after the OK (see _command_line)

    def _at_ident(self, op: str, args: list[str], value: str) -> tuple[list[str], _Final | None]:
        if op not in ("", "=?"):
            raise ValueError(op)
        return ([value] if op == "" else []), None

    def _at_cgmi(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        return self._at_ident(op, args, self.profile.manufacturer)

    def _at_cgmm(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        return self._at_ident(op, args, self.profile.model)

    def _at_cgmr(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        return self._at_ident(op, args, self.profile.revision)

    def _at_cgsn(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        return self._at_ident(op, args, "867962041234567")

    def _at_cmgf(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "?":
            return [f"+CMGF: {self.settings.cmgf}"], None
        if op == "=?":
            return ["+CMGF: (0,1)"], None
        value = int(args[0]) if op == "=" else 0
        if value not in (0, 1):
            raise ValueError(value)
        self.settings.cmgf = value
        return [], None

    def _usage(self) -> str:
        used, total = self.stored_now, len(self.slots)
        return f"{used},{total}"

    def _at_cpms(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "?":
            usage = self._usage()
            return ["+CPMS: " + ",".join(f'"{m}",{usage}' for m in self.settings.mems)], None
        if op == "=?":
            known = ",".join(f'"{m}"' for m in self.profile.memories)
            return [f"+CPMS: ({known}),({known}),({known})"], None
        if op != "=" or not 1 <= len(args) <= 3:
            raise ValueError(op)
        names = [a.strip().strip('"').upper() for a in args]
        if any(name not in self.profile.memories for name in names):
            return [], self._cms(302)
        mems = list(self.settings.mems)
        mems[: len(names)] = names
        self.settings.mems = (mems[0], mems[1], mems[2])
        return ["+CPMS: " + ",".join([self._usage()] * 3)], None

    def _at_cnmi(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        p = self.profile
        if op == "?":
            return ["+CNMI: " + ",".join(str(v) for v in self.settings.cnmi)], None
        if op == "=?":
            modes = ",".join(str(m) for m in sorted(p.cnmi_modes))
            mts = ",".join(str(m) for m in sorted(p.cnmi_mts))
            return [f"+CNMI: ({modes}),({mts}),(0,2),(0-2),(0,1)"], None
        if op != "=" or not 1 <= len(args) <= 5:
            raise ValueError(op)
        values = list(self.settings.cnmi)
        for i, arg in enumerate(args):
            if arg.strip():
                values[i] = int(arg)
        if values[0] not in p.cnmi_modes or values[1] not in p.cnmi_mts:
            return [], _Final(p.cnmi_reject)
        if not (values[2] in (0, 2) and 0 <= values[3] <= 2 and values[4] in (0, 1)):
            return [], self._cms(303)
        self.settings.cnmi = (values[0], values[1], values[2], values[3], values[4])
        return [], None

    def _at_csq(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "=?":
            return ["+CSQ: (0-31,99),(0-7,99)"], None
        if op:
            raise ValueError(op)
        return [f"+CSQ: {self.signal},99"], None

    def _at_creg(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "?":
            return [f"+CREG: {self.settings.creg},1"], None
        if op == "=?":
            return ["+CREG: (0-2)"], None
        value = int(args[0]) if op == "=" else 0
        if value not in (0, 1, 2):
            raise ValueError(value)
        self.settings.creg = value
        return [], None

    def _at_curc(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "?":
            return [f"^CURC: {int(self.settings.curc)}"], None
        if op != "=" or args[0] not in ("0", "1"):
            raise ValueError(op)
        self.settings.curc = args[0] == "1"
        return [], None

    def _at_cmgl(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "=?":
            return ["+CMGL: (0-4)"], None
        if self.settings.cmgf != 0:
            return [], self._cms(302)  # text mode listings are not simulated
        stat = int(args[0]) if op == "=" else 0
        if not 0 <= stat <= 4:
            return [], self._cms(304)
        lines: list[str] = []
        for index, message in self.storage().items():
            if stat in (4, message.stat):
                lines += [f"+CMGL: {index},{message.stat},,{message.length}", message.pdu]
                if message.stat == 0:
                    message.stat = 1
        return lines, None

    def _at_cmgr(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "=?":
            return [], None
        if op != "=":
            raise ValueError(op)
        if self.settings.cmgf != 0:
            return [], self._cms(302)
        slot = self._slot(args[0])
        if slot is None:
            return [], self._cms(321)
        message = self.slots[slot]
        if message is None:
            self.counters.empty_reads += 1
            return [], (
                None if self.profile.cmgr_empty == "OK" else _Final(self.profile.cmgr_empty)
            )
        lines = [f"+CMGR: {message.stat},,{message.length}", message.pdu]
        if message.stat == 0 and self._cmgr_count + 1 != self.profile.reset_on_cmgr:
            message.stat = 1  # a read cut off by a reset leaves the message unread
        return lines, None

    def _at_cmgd(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "=?":
            first = self.profile.first_index
            return [f"+CMGD: ({first}-{first + len(self.slots) - 1}),(0-4)"], None
        if op != "=":
            raise ValueError(op)
        flag = int(args[1]) if len(args) > 1 and args[1].strip() else 0
        if flag:
            keep = {1: {0, 2, 3}, 2: {0, 2}, 3: {0}, 4: set()}.get(flag)
            if keep is None:
                return [], self._cms(302)
            for i, message in enumerate(self.slots):
                if message is not None and message.stat not in keep:
                    self.slots[i] = None
                    self.counters.deleted += 1
            return [], None
        slot = self._slot(args[0])
        if slot is None or self.slots[slot] is None:
            self.counters.empty_deletes += 1
            return [], self._cms(321)
        self.slots[slot] = None
        self.counters.deleted += 1
        return [], None

    def _at_prompt(self, name: str, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        if op == "=?":
            return [], None
        if op != "=" or self.settings.cmgf != 0:
            return [], self._cms(302)
        length = int(args[0])
        if not 7 <= length <= 164:
            return [], self._cms(304)
        if name == "+CMGW" and self._free_slot() is None:
            return [], self._cms(322)
        self._prompt = _Prompt(name, length)
        return [], _PROMPT

    def _at_cmgs(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        return self._at_prompt("+CMGS", op, args)

    def _at_cmgw(self, op: str, args: list[str]) -> tuple[list[str], _Final | None]:
        return self._at_prompt("+CMGW", op, args)

    _HANDLERS: ClassVar[dict[str, _Handler]] = {
        "+CMEE": _at_cmee,
        "+CPIN": _at_cpin,
        "+CFUN": _at_cfun,
        "+CGMI": _at_cgmi,
        "+GMI": _at_cgmi,
        "+CGMM": _at_cgmm,
        "+GMM": _at_cgmm,
        "+CGMR": _at_cgmr,
        "+CGSN": _at_cgsn,
        "+CMGF": _at_cmgf,
        "+CPMS": _at_cpms,
        "+CNMI": _at_cnmi,
        "+CSQ": _at_csq,
        "+CREG": _at_creg,
        "^CURC": _at_curc,
        "+CMGL": _at_cmgl,
        "+CMGR": _at_cmgr,
        "+CMGD": _at_cmgd,
        "+CMGS": _at_cmgs,
        "+CMGW": _at_cmgw,
    }


def _check_pdu(pdu: str) -> None:
    try:
        length = tpdu_length(pdu)
    except (ValueError, IndexError):
        length = 0
    if length <= 0:
        raise ValueError(f"not an SMS PDU with an SMSC field: {pdu[:40]!r}")


def _is_error(final: _Final | None) -> bool:
    return final is not None and final.text is not None and final is not _PROMPT


def _split_commands(rest: str) -> list[str]:
    """``E0+CMEE=1;+CMGF=0`` -> ["E0", "+CMEE=1", "+CMGF=0"]: ';' outside quotes ends an
    extended command; basic commands run up to the next '+', '^' or '#'."""
    commands: list[str] = []
    current = ""
    quoted = False
    for char in rest:
        if char == '"':
            quoted = not quoted
        if not quoted and char == ";":
            commands.append(current)
            current = ""
            continue
        if not quoted and char in "+^#" and current and current[0] not in "+^#":
            commands.append(current)
            current = ""
        current += char
    commands.append(current)
    return [c.strip() for c in commands if c.strip()]


def _parse_extended(command: str) -> tuple[str, str, list[str]]:
    """ "+CMGR=3" -> ("+CMGR", "=", ["3"]); ops: "" action, "?" read, "=?" test, "=" set."""
    upper = command.upper()
    for op in ("=?", "?", "="):
        name, sep, _ = upper.partition(op)
        if sep and "=" not in name and "?" not in name:
            if op != "=":
                return name, op, []
            raw_rest = command[len(name) + 1 :]  # keep the case of quoted arguments
            return name, "=", _split_args(raw_rest)
    return upper, "", []


def _split_args(text: str) -> list[str]:
    args: list[str] = []
    current = ""
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            args.append(current.strip())
            current = ""
        else:
            current += char
    args.append(current.strip())
    return args


def _basic_parts(command: str) -> list[tuple[str, str]]:
    """ "E0V1&W" -> [("E", "0"), ("V", "1"), ("&W", "")]."""
    parts: list[tuple[str, str]] = []
    i = 0
    while i < len(command):
        letter = command[i]
        i += 1
        if letter == "&" and i < len(command):
            letter += command[i]
            i += 1
        digits = ""
        while i < len(command) and command[i].isdigit():
            digits += command[i]
            i += 1
        parts.append((letter, digits))
    return parts
