"""AT command engine for GSM modems, sans-I/O: bytes in, typed events out.

One command is in flight at a time. What the modem sends is split into lines
(``\\r\\n``, ``\\r\\r\\n`` as Huawei sends, a lone ``\\r``, empty lines and
leading garbage all tolerated) and each line is routed by what it is, never by
when it came:

- the echo of the running command is dropped (echo may be on after a reset);
- a final result (``OK``, ``ERROR``, ``+CME ERROR: n``, ``+CMS ERROR: n``, by
  number or text, ``COMMAND NOT SUPPORT``) completes the command;
- an unsolicited result code (``+CMTI:``, ``+CMT:`` with its PDU line,
  ``+CDSI:``, ``RDY``, ``SMS DONE``, ``^RSSI:`` and other ``^`` lines, ...) is
  an :class:`Urc`, also in the middle of a response; ``+CPIN:``, ``+CFUN:``,
  ``+CREG:`` and ``^`` lines are answers when the running command asked for
  them (its own prefix) and URCs otherwise;
- anything else is an information line of the running command's response.

A ``>`` prompt (text input: the PDU of ``AT+CMGS``) is reported as :class:`Prompt`,
also when a URC follows it at once; the driver writes the PDU, or cancels a prompt
nobody asked for with ESC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

ESC = b"\x1b"
MAX_LINE = 2048  # a PDU line is under 400 characters; longer is garbage

# Two-line URCs: the line after the header is their body (a PDU).
_URC_WITH_BODY = ("+CMT:", "+CDS:")
# Always unsolicited.
_URC_PREFIXES = (
    "+CMTI:", "+CMT:", "+CDSI:", "+CDS:", "+CBM:", "+QIND:", "+CUSD:", "+CIEV:", "+CRING:",
    "+CGEV:", "+QUSIM:", "+STIN:", "+CTZV:", "+CTZE:", "+NITZ:",
)  # fmt: skip
# Unsolicited unless they answer the running command.
_URC_UNLESS_OWN = ("+CPIN:", "+CFUN:", "+CREG:", "+CGREG:", "+CEREG:", "+CSQ:", "^")
_URC_WORDS = frozenset(
    {"RDY", "SMS DONE", "PB DONE", "SMS READY", "CALL READY", "RING", "NORMAL POWER DOWN",
     "UNDER-VOLTAGE POWER DOWN", "UNDER-VOLTAGE WARNNING", "OVER-VOLTAGE WARNNING", "READY"}
)  # fmt: skip

# Text forms of error codes that modems give with +CMEE=2 or by habit.
_ERROR_TEXTS = {
    "operation not allowed": 3,
    "operation not supported": 4,
    "sim not inserted": 10,
    "sim pin required": 11,
    "sim puk required": 12,
    "sim failure": 13,
    "sim busy": 14,
    "sim wrong": 15,
    "incorrect password": 16,
    "memory full": 20,
    "invalid index": 21,
    "not found": 22,
    "no network service": 30,
    "network timeout": 31,
    "unknown error": 100,
}
_CMS_ERROR_TEXTS = {
    "sim busy": 314,
    "invalid memory index": 321,
    "invalid index": 321,
    "memory full": 322,
    "network timeout": 332,
    "sim not inserted": 310,
    "sim pin required": 311,
    "sim failure": 313,
    "unknown error": 500,
}
BUSY_CODES = frozenset({14, 314, 515})
"""SIM busy (CME 14, CMS 314) and "initialisation in progress" (CMS 515): retry later."""


class FinalKind(enum.Enum):
    OK = "OK"
    ERROR = "ERROR"
    CME_ERROR = "+CME ERROR"
    CMS_ERROR = "+CMS ERROR"
    NOT_SUPPORTED = "COMMAND NOT SUPPORT"


@dataclass(frozen=True, slots=True)
class Final:
    """The final result of a command; ``code`` is the CME/CMS number when there is one."""

    kind: FinalKind
    code: int | None = None
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.kind is FinalKind.OK

    @property
    def busy(self) -> bool:
        """The SIM or modem is busy: the same command may succeed a little later."""
        return self.code in BUSY_CODES

    def __str__(self) -> str:
        if self.kind in (FinalKind.CME_ERROR, FinalKind.CMS_ERROR):
            return f"{self.kind.value}: {self.code if self.code is not None else self.text}"
        return str(self.kind.value)


@dataclass(frozen=True, slots=True)
class Response:
    """A command's information lines and its final result."""

    command: str
    lines: tuple[str, ...]
    final: Final

    def with_prefix(self, prefix: str) -> list[str]:
        """The values of the lines that start with ``prefix`` (``"+CSQ:"``), stripped."""
        return [line[len(prefix) :].strip() for line in self.lines if line.startswith(prefix)]


@dataclass(frozen=True, slots=True)
class Urc:
    """An unsolicited result code; ``body`` is the PDU line of ``+CMT:`` and ``+CDS:``."""

    line: str
    body: str | None = None

    @property
    def name(self) -> str:
        """``+CMTI``, ``RDY``, ``^RSSI``: what handlers are chosen by."""
        head, sep, _ = self.line.partition(":")
        return head if sep else self.line

    @property
    def value(self) -> str:
        return self.line.partition(":")[2].strip()


@dataclass(frozen=True, slots=True)
class Prompt:
    """The ``>`` prompt for text input."""


@dataclass(frozen=True, slots=True)
class Stray:
    """An information line while no command runs, that is no known URC."""

    line: str


Event = Response | Urc | Prompt | Stray


def classify_final(line: str) -> Final | None:
    """The final result ``line`` is, or None."""
    if line == "OK":
        return Final(FinalKind.OK)
    if line == "ERROR":
        return Final(FinalKind.ERROR)
    if line.startswith("COMMAND NOT SUPPORT"):
        return Final(FinalKind.NOT_SUPPORTED)
    for kind, texts in (
        (FinalKind.CME_ERROR, _ERROR_TEXTS),
        (FinalKind.CMS_ERROR, _CMS_ERROR_TEXTS),
    ):
        prefix = kind.value + ":"
        if line.startswith(prefix):
            detail = line[len(prefix) :].strip()
            if detail.isdigit():
                return Final(kind, int(detail), detail)
            return Final(kind, texts.get(detail.lower()), detail)
    return None


def own_prefix(command: str) -> str | None:
    """The prefix of the answer lines of ``command``: ``AT+CREG?`` answers ``+CREG:``."""
    body = command.strip()[2:] if command.strip().upper().startswith("AT") else ""
    if not body or body[0] not in "+^":
        return None
    name = body[0]
    for char in body[1:]:
        if not (char.isalnum() or char == "_"):
            break
        name += char
    return name.upper() + ":" if len(name) > 1 else None


def is_urc(line: str, running: str | None) -> bool:
    """Whether ``line`` is unsolicited while ``running`` (or nothing) is in flight."""
    if line in _URC_WORDS or line.startswith(_URC_PREFIXES):
        return True
    if line.startswith(_URC_UNLESS_OWN):
        own = own_prefix(running) if running is not None else None
        return own is None or not line.upper().startswith(own)
    return False


@dataclass
class LineSplitter:
    """Bytes to lines; tolerant of every line ending modems use, bounded."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[str | Prompt]:
        self._buffer += data
        out: list[str | Prompt] = []
        while True:
            cut = _first_break(self._buffer)
            if cut < 0:
                break
            raw = bytes(self._buffer[:cut])
            del self._buffer[: cut + 1]
            line = _clean(raw)
            if line == ">":
                # The prompt with a URC right behind it in the same read: still the prompt.
                out.append(Prompt())
            elif line:
                out.append(line)
        if _clean(bytes(self._buffer)) == ">" and self._buffer.rstrip().endswith(b">"):
            self._buffer.clear()
            out.append(Prompt())
        if len(self._buffer) > MAX_LINE:
            self._buffer.clear()  # no line ending in sight: noise, not a line
        return out


def _first_break(buffer: bytearray) -> int:
    positions = [p for p in (buffer.find(b"\r"), buffer.find(b"\n")) if p >= 0]
    return min(positions) if positions else -1


def _clean(raw: bytes) -> str:
    """A line without control characters or the noise a port picks up before a modem talks."""
    text = raw.decode("latin-1")
    text = "".join(ch for ch in text if " " <= ch <= "~")
    return text.strip()


class AtSession:
    """The engine: :meth:`command` gives the bytes to send, :meth:`feed` the events."""

    def __init__(self) -> None:
        self._splitter = LineSplitter()
        self._running: str | None = None
        self._lines: list[str] = []
        self._urc_waiting_body: str | None = None

    @property
    def running(self) -> str | None:
        return self._running

    def command(self, command: str) -> bytes:
        """Start ``command`` (``"AT+CSQ"``); one at a time."""
        if self._running is not None:
            raise RuntimeError(f"{self._running!r} is still running")
        self._running = command
        self._lines = []
        return command.encode("ascii") + b"\r"

    def abandon(self) -> Response | None:
        """Give up the running command (timed out); what it had so far, with an ERROR."""
        if self._running is None:
            return None
        partial = Response(
            self._running, tuple(self._lines), Final(FinalKind.ERROR, None, "timeout")
        )
        self._running = None
        self._lines = []
        return partial

    def reset(self) -> None:
        """Forget everything in flight (the port was reopened)."""
        self._splitter = LineSplitter()
        self._running = None
        self._lines = []
        self._urc_waiting_body = None

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for item in self._splitter.feed(data):
            if isinstance(item, Prompt):
                events.append(item)
                continue
            event = self._route(item)
            if event is not None:
                events.append(event)
        return events

    def _route(self, line: str) -> Event | None:
        if self._urc_waiting_body is not None:
            header, self._urc_waiting_body = self._urc_waiting_body, None
            return Urc(header, line)
        running = self._running
        if running is not None and line.upper() == running.strip().upper():
            return None  # the echo
        final = classify_final(line)
        if final is not None:
            if running is None:
                return Stray(line)
            response = Response(running, tuple(self._lines), final)
            self._running = None
            self._lines = []
            return response
        if is_urc(line, running):
            if line.startswith(_URC_WITH_BODY):
                self._urc_waiting_body = line
                return None
            return Urc(line)
        if running is None:
            return Stray(line)
        self._lines.append(line)
        return None
