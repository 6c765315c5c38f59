"""The simulated modem's records and state: storage slots, counters, settings, the
output buffer and the URC queue, and the result types every command handler returns.

:class:`ModemState` is the base the command groups (:mod:`firmware_sim.modem_general`,
:mod:`firmware_sim.modem_sms`) and :class:`firmware_sim.modem.ModemCore` build on.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware_sim.modem_network import SimNetwork
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
    1: "unassigned (unallocated) number",
    21: "short message transfer rejected",
    38: "network out of order",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    314: "SIM busy",
    321: "invalid memory index",
    322: "memory full",
    332: "network timeout",
    500: "unknown error",
}

SIM_COMMANDS = frozenset({"+CPMS", "+CMGL", "+CMGR", "+CMGD", "+CMGW", "+CMGS", "+CNMI"})
"""SMS commands that need a ready SIM (``+CME ERROR: 14`` while busy, 11 before the PIN)."""


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
    """PDUs the gateway sent with ``AT+CMGS`` and the network accepted."""
    reports_stored: int = 0
    """Status reports stored and indicated (``+CDSI``, +CNMI ds=2)."""
    reports_routed: int = 0
    """Status reports routed (``+CDS``, ds=1), not stored."""
    reports_dropped: int = 0
    """Status reports the +CNMI setting (ds=0) asked for neither way."""


@dataclass(slots=True)
class Settings:
    """What a reset or ATZ forgets."""

    echo: bool
    cmee: int = 0
    cmgf: int = 0
    cnmi: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    creg: int = 0
    curc: bool = True
    mems: tuple[str, str, str] = ("SM", "SM", "SM")


@dataclass(slots=True)
class PendingInput:
    command: str
    length: int
    data: bytearray = field(default_factory=bytearray)


class FinalResult:
    """A command's outcome when it is not OK."""

    __slots__ = ("text",)

    def __init__(self, text: str | None) -> None:
        self.text = text  # None: no final result at all (Wavecom's +CPIN?)


NO_FINAL = FinalResult(None)
PROMPT = FinalResult("> ")

Answer = tuple[list[str], FinalResult | None]
"""What a command handler returns: info lines, and None for OK or the final result."""


class ModemState:
    """Everything the modem remembers; the command groups and the core share it."""

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
        self.settings = Settings(echo=profile.echo_default)
        self._out = bytearray()
        self._line = bytearray()
        self._prompt: PendingInput | None = None
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
        self.network = SimNetwork()
        """Where submitted messages go; set its failures and delays from a test."""

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

    def _defaults(self) -> Settings:
        return Settings(
            echo=self.profile.echo_default,
            cmgf=self.profile.cmgf_default,
            cnmi=self.profile.cnmi_default,
        )

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
        if is_status_report(pdu):
            self.counters.reports_stored += 1
            self._urc(f'+CDSI: "SR",{index + self.profile.first_index}')
            return True
        self.counters.delivered += 1
        mt = self.settings.cnmi[1]
        every = self.profile.cmt_copy_every
        if mt == 2 and every and self.counters.delivered % every == 0:
            self.counters.routed += 1
            self._urc(f"+CMT: ,{tpdu_length(pdu)}", pdu)
        if mt != 0:
            self._urc(f'+CMTI: "{self.settings.mems[2]}",{index + self.profile.first_index}')
        return True

    def _offer(self, pdu: str) -> None:
        """Store what the network brings, or hold it (in order) until there is room."""
        if self.held:
            self.held.append(pdu)  # keep the network's order
            self.counters.held_back += 1
            return
        if not self._store_delivered(pdu):
            self.held.append(pdu)
            self._next_retry = self.clock() + self.profile.network_retry_s

    def _status_report(self, pdu: str) -> None:
        """A status report from the network, as +CNMI's ds asks: routed, stored or neither."""
        ds = self.settings.cnmi[3]
        if ds == 1:
            self.counters.reports_routed += 1
            self._urc(f"+CDS: {tpdu_length(pdu)}", pdu)
        elif ds == 2:
            self._offer(pdu)
        else:
            self.counters.reports_dropped += 1

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

    def _usage(self) -> str:
        used, total = self.stored_now, len(self.slots)
        return f"{used},{total}"

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

    def _cme(self, code: int) -> FinalResult:
        if self.settings.cmee == 0:
            return FinalResult("ERROR")
        if self.settings.cmee == 2:
            return FinalResult(f"+CME ERROR: {CME_TEXT.get(code, 'unknown')}")
        return FinalResult(f"+CME ERROR: {code}")

    def _cms(self, code: int) -> FinalResult:
        if self.settings.cmee == 2:
            return FinalResult(f"+CMS ERROR: {CMS_TEXT.get(code, 'unknown error')}")
        return FinalResult(f"+CMS ERROR: {code}")


def is_status_report(pdu: str) -> bool:
    """Whether a PDU (hex, SMSC field first) is an SMS-STATUS-REPORT (MTI 10)."""
    smsc = int(pdu[:2], 16)
    return int(pdu[2 + 2 * smsc : 4 + 2 * smsc], 16) & 0x03 == 0x02
