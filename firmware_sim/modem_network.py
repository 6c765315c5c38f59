"""The network behind the simulated modem for what the gateway sends: SMS-SUBMIT PDUs
read (a reader of its own, apart from ``protocols``), messages put together per person,
status reports made after a delay, and the failures a lab asks for.

What a person received is :attr:`SimNetwork.received`, one entry per complete message
(the parts of a concatenated SMS joined), so a test checks what people got, not PDUs.

Failures:

* :meth:`SimNetwork.fail_next` answers the next ``AT+CMGS`` with ``+CMS ERROR: <code>``
  (332 network timeout and 314 SIM busy are transient; others, such as 21 "short
  message transfer rejected", are for good);
* :attr:`SimNetwork.refused`: numbers whose every submit is answered with a code;
* :attr:`SimNetwork.unreachable`: numbers that accept the submit (``+CMGS: <mr>``)
  and never get it: the status report says 0x43 "not obtainable" (permanent);
* :meth:`SimNetwork.lose_answer_next`: the next submits reach the person, and the
  modem then hangs (``hang_s`` of its profile) before it answers: the sender cannot
  know the message went out.
"""

from __future__ import annotations

import codecs
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import gsm0338  # type: ignore[import-untyped]  # noqa: F401  (registers the "gsm03.38" codec)

from firmware_sim.sms_pdu import originating_address, smsc_field, timestamp_field

ST_DELIVERED = 0x00
ST_NOT_OBTAINABLE = 0x43
DEFAULT_SMSC = "+4917000000"


@dataclass(frozen=True, slots=True)
class SubmittedPart:
    """One SMS-SUBMIT as the network read it."""

    mr: int
    destination: str
    text: str
    report_requested: bool
    concat: tuple[int, int, int] | None
    """(reference, total, index) of a concatenated message."""
    pdu: str


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A whole message as the person's phone shows it."""

    destination: str
    text: str
    mrs: tuple[int, ...]
    """The message references of its parts, in part order."""


@dataclass(slots=True)
class _Report:
    due: float
    mr: int
    destination: str
    status: int


@dataclass(slots=True)
class SimNetwork:
    """What the network does with submitted messages. Settings may change at any time."""

    report_delay_s: float = 0.5
    refused: dict[str, int] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)
    smsc: str = DEFAULT_SMSC
    parts: list[SubmittedPart] = field(default_factory=list)
    """Every part accepted, in order."""
    received: list[ReceivedMessage] = field(default_factory=list)
    refusals: list[tuple[str, int]] = field(default_factory=list)
    """(destination or "", code) of every submit answered with an error."""
    _failures: deque[int] = field(default_factory=deque)
    _reports: list[_Report] = field(default_factory=list)
    _waiting: dict[tuple[str, int], dict[int, SubmittedPart]] = field(default_factory=dict)

    answers_to_lose: int = 0

    def lose_answer_next(self, count: int = 1) -> None:
        """Send the next ``count`` messages, then hang instead of answering."""
        self.answers_to_lose += count

    def fail_next(self, *codes: int) -> None:
        """Answer the next submits, one code each, with ``+CMS ERROR: <code>``."""
        self._failures.extend(codes)

    def submit(self, pdu: str, mr: int, now: float) -> int | None:
        """Take one SMS-SUBMIT with reference ``mr``; None: accepted, else the CMS code."""
        part = read_submit(pdu, mr)
        code = self._failures.popleft() if self._failures else self.refused.get(part.destination)
        if code is not None:
            self.refusals.append((part.destination, code))
            return code
        self.parts.append(part)
        reachable = part.destination not in self.unreachable
        if reachable:
            self._assemble(part)
        if part.report_requested:
            status = ST_DELIVERED if reachable else ST_NOT_OBTAINABLE
            self._reports.append(_Report(now + self.report_delay_s, mr, part.destination, status))
        return None

    def next_due(self) -> float | None:
        return min((r.due for r in self._reports), default=None)

    def due_reports(self, now: float) -> list[str]:
        """The SMS-STATUS-REPORT PDUs (hex, SMSC field first) due by ``now``."""
        due = [r for r in self._reports if r.due <= now]
        self._reports = [r for r in self._reports if r.due > now]
        return [status_report_pdu(r.mr, r.destination, r.status, self.smsc) for r in due]

    def _assemble(self, part: SubmittedPart) -> None:
        if part.concat is None:
            self.received.append(ReceivedMessage(part.destination, part.text, (part.mr,)))
            return
        reference, total, index = part.concat
        key = (part.destination, reference)
        waiting = self._waiting.setdefault(key, {})
        waiting[index] = part
        if len(waiting) == total:
            del self._waiting[key]
            ordered = [waiting[i] for i in sorted(waiting)]
            text = "".join(p.text for p in ordered)
            mrs = tuple(p.mr for p in ordered)
            self.received.append(ReceivedMessage(part.destination, text, mrs))


def status_report_pdu(
    mr: int, recipient: str, status: int, smsc: str = DEFAULT_SMSC, when: datetime | None = None
) -> str:
    """An SMS-STATUS-REPORT (TS 23.040 9.2.2.3): first octet 0x06 (MTI 10, no more
    messages), TP-MR, TP-RA, TP-SCTS, TP-DT, TP-ST; no parameter indicator."""
    stamp = timestamp_field((when or datetime.now(UTC)).replace(microsecond=0))
    body = bytes((0x06, mr)) + originating_address(recipient) + stamp + stamp + bytes((status,))
    return (smsc_field(smsc) + body).hex().upper()


def read_submit(pdu_hex: str, mr: int) -> SubmittedPart:
    """The fields of an SMS-SUBMIT (hex, SMSC field first); ValueError if it is none."""
    data = bytes.fromhex(pdu_hex)
    tpdu = data[1 + data[0] :]
    first = tpdu[0]
    if first & 0x03 != 0x01:
        raise ValueError("not an SMS-SUBMIT")
    digits, toa = tpdu[2], tpdu[3]
    pos = 4 + (digits + 1) // 2
    number = "".join(f"{octet:02X}"[::-1] for octet in tpdu[4:pos])[:digits]
    destination = "+" + number if toa == 0x91 else number
    dcs = tpdu[pos + 1]
    pos += 2
    pos += {0x00: 0, 0x10: 1, 0x08: 7, 0x18: 7}[first & 0x18]  # TP-VPF: VP octets
    udl, ud = tpdu[pos], tpdu[pos + 1 :]
    header = ud[1 : 1 + ud[0]] if first & 0x40 else b""
    concat = None
    i = 0
    while i + 1 < len(header):
        iei, size = header[i], header[i + 1]
        value = header[i + 2 : i + 2 + size]
        if iei == 0x00 and size == 3:
            concat = (value[0], value[1], value[2])
        elif iei == 0x08 and size == 4:
            concat = (value[0] << 8 | value[1], value[2], value[3])
        i += 2 + size
    header_octets = len(header) + 1 if header else 0
    if dcs & 0x0C == 0x08:
        text = ud[header_octets:].decode("utf-16-be")
    else:
        bits = int.from_bytes(ud, "little")
        septets = bytes((bits >> (7 * k)) & 0x7F for k in range(udl))
        text = codecs.decode(septets[(header_octets * 8 + 6) // 7 :], "gsm03.38")
    return SubmittedPart(mr, destination, text, bool(first & 0x20), concat, pdu_hex)
