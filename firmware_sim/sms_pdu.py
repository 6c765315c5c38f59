"""SMS-DELIVER PDUs as a network delivers them to a modem (3GPP TS 23.040 9.2.2.1), and the
split of a frame into such PDUs (terminal-protocol-v1 section 4, SMS).

An encoder only: the simulator builds what a modem would store. The gateway has its
own decoder (``protocols.sms_pdu``); this module must not share code with it, so a
bug in one is caught by the other.

Layout of the hex string ``deliver_pdu`` returns (what ``+CMGL``/``+CMGR`` print)::

    SMSC: len toa digits... | first octet | OA: ndigits toa digits... | PID | DCS
          | SCTS (7 octets, swapped BCD, tz in quarter hours) | UDL | [UDHL UDH] UD

``len`` counts the SMSC octets incl. its toa; the "PDU length" a modem prints in
``+CMGL: idx,stat,,len`` counts everything after the SMSC field (``tpdu_length``).
"""

from __future__ import annotations

import base64
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import gsm0338  # type: ignore[import-untyped]  # noqa: F401  (registers the "gsm03.38" codec)

GSM7 = "gsm03.38"
MAX_UD_OCTETS = 140
MAX_SEPTETS = 160
TEXT_PREFIX = "SM1 "
"""Start of the text form of a frame (spec 4, SMS)."""

TOA_INTERNATIONAL = 0x91
TOA_UNKNOWN = 0x81
TOA_NATIONAL = 0xA1
TOA_ALPHANUMERIC = 0xD0

DCS_GSM7 = 0x00
DCS_8BIT = 0x04
DCS_UCS2 = 0x08
DCS_8BIT_CLASS0 = 0xF4
DCS_8BIT_CLASS1 = 0xF5

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08

_MTI_DELIVER = 0x00
_MMS_NO_MORE = 0x04  # TP-MMS set means "no more messages are waiting"
_SRI = 0x20
_UDHI = 0x40
_RP = 0x80


class Alphabet(enum.Enum):
    GSM7 = "gsm7"
    EIGHT_BIT = "8bit"
    UCS2 = "ucs2"


def alphabet_of(dcs: int) -> Alphabet:
    """The character set a data coding scheme names (TS 23.038 section 4)."""
    if dcs & 0xF0 == 0xF0:  # data coding / message class group
        return Alphabet.EIGHT_BIT if dcs & 0x04 else Alphabet.GSM7
    if dcs & 0xC0 == 0x00:  # general data coding
        return {0: Alphabet.GSM7, 1: Alphabet.EIGHT_BIT, 2: Alphabet.UCS2}.get(
            (dcs >> 2) & 0x03, Alphabet.GSM7
        )
    raise ValueError(f"data coding scheme 0x{dcs:02X} is not one this encoder writes")


@dataclass(frozen=True, slots=True)
class Concat:
    """The concatenation element of a user data header (TS 23.040 9.2.3.24.1 and .8)."""

    ref: int
    total: int
    seq: int
    ref_bits: int = 8

    def __post_init__(self) -> None:
        if self.ref_bits not in (8, 16) or not 0 <= self.ref < (1 << self.ref_bits):
            raise ValueError(f"reference {self.ref} does not fit {self.ref_bits} bits")
        if not 1 <= self.seq <= self.total <= 255:
            raise ValueError(f"part {self.seq} of {self.total} is not 1..total..255")

    def to_bytes(self) -> bytes:
        if self.ref_bits == 8:
            return bytes((IEI_CONCAT_8, 3, self.ref, self.total, self.seq))
        return bytes((IEI_CONCAT_16, 4, self.ref >> 8, self.ref & 0xFF, self.total, self.seq))


@dataclass(frozen=True, slots=True)
class Deliver:
    """The fields of one SMS-DELIVER. ``text`` for GSM 7-bit and UCS2, ``data`` for 8-bit."""

    sender: str
    timestamp: datetime
    """Service-centre time stamp; must be timezone-aware (encoded in quarter hours)."""
    smsc: str = "+4917000000"
    """Empty: the PDU starts with ``00`` (no SMSC field, "use the default")."""
    text: str = ""
    data: bytes = b""
    dcs: int = DCS_GSM7
    pid: int = 0
    sender_toa: int | None = None
    """None: 0x91 for ``+digits``, 0x81 for digits, 0xD0 (alphanumeric) otherwise."""
    concat: Concat | None = None
    extra_udh: bytes = b""
    """More information elements after the concatenation element, as raw bytes."""
    more_messages: bool = False
    status_report: bool = False
    reply_path: bool = False


def deliver_pdu(message: Deliver) -> str:
    """The message as the uppercase hex a modem prints, SMSC field included."""
    return (smsc_field(message.smsc) + tpdu(message)).hex().upper()


def tpdu_length(pdu_hex: str) -> int:
    """The ``<length>`` of ``+CMGL``/``+CMGR``/``+CMT``: octets after the SMSC field."""
    data = bytes.fromhex(pdu_hex)
    return len(data) - 1 - data[0]


def smsc_field(number: str) -> bytes:
    if not number:
        return b"\x00"
    toa, digits = _number_toa(number, None)
    body = bytes((toa,)) + _swapped_bcd(digits)
    return bytes((len(body),)) + body


def tpdu(message: Deliver) -> bytes:
    udh = b""
    if message.concat is not None:
        udh += message.concat.to_bytes()
    udh += message.extra_udh
    first = _MTI_DELIVER
    if not message.more_messages:
        first |= _MMS_NO_MORE
    if message.status_report:
        first |= _SRI
    if message.reply_path:
        first |= _RP
    if udh:
        first |= _UDHI
    udl, user_data = user_data_field(message.dcs, udh, message.text, message.data)
    return (
        bytes((first,))
        + originating_address(message.sender, message.sender_toa)
        + bytes((message.pid, message.dcs))
        + timestamp_field(message.timestamp)
        + bytes((udl,))
        + user_data
    )


def originating_address(number: str, toa: int | None = None) -> bytes:
    """TP-OA: the count of useful semi-octets, the type of address, the digits."""
    toa, digits = _number_toa(number, toa)
    if toa & 0x70 == 0x50:  # alphanumeric: GSM 7-bit packed, length in semi-octets used
        septets = number.encode(GSM7)
        packed = pack_septets(septets)
        return bytes((math.ceil(len(septets) * 7 / 4), toa)) + packed
    return bytes((len(digits), toa)) + _swapped_bcd(digits)


def timestamp_field(when: datetime) -> bytes:
    """TP-SCTS: yy mm dd hh mm ss tz, each two swapped BCD digits; tz in signed quarters."""
    offset = when.utcoffset()
    if offset is None:
        raise ValueError("the service-centre time stamp needs a timezone")
    quarters, rest = divmod(abs(offset), timedelta(minutes=15))
    if rest or quarters > 79:
        raise ValueError(f"timezone {offset} is not a whole number of quarter hours")
    digits = [when.year % 100, when.month, when.day, when.hour, when.minute, when.second]
    out = bytearray(_bcd_byte(value) for value in digits)
    tz = _bcd_byte(int(quarters))
    if offset < timedelta(0):
        tz |= 0x08  # the sign bit is the top bit of the tens digit (the low nibble)
    out.append(tz)
    return bytes(out)


def user_data_field(dcs: int, udh: bytes, text: str, data: bytes) -> tuple[int, bytes]:
    """(TP-UDL, TP-UD): UDL counts septets for GSM 7-bit (header and fill bits included),
    octets otherwise."""
    header = bytes((len(udh),)) + udh if udh else b""
    alphabet = alphabet_of(dcs)
    if alphabet is Alphabet.GSM7:
        septets = text.encode(GSM7)
        fill = (7 - len(header) * 8 % 7) % 7
        header_septets = (len(header) * 8 + fill) // 7
        udl = header_septets + len(septets)
        body = header + pack_septets(septets, fill)
        if udl > MAX_SEPTETS:
            raise ValueError(f"{udl} septets do not fit one SMS ({MAX_SEPTETS})")
    else:
        payload = text.encode("utf-16-be") if alphabet is Alphabet.UCS2 else data
        body = header + payload
        udl = len(body)
    if len(body) > MAX_UD_OCTETS:
        raise ValueError(f"{len(body)} octets of user data do not fit one SMS")
    return udl, body


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """GSM 7-bit packing, least significant bit first, after ``fill_bits`` zero bits."""
    value = 0
    for index, septet in enumerate(septets):
        if septet > 0x7F:
            raise ValueError(f"0x{septet:02X} is not a septet")
        value |= septet << (fill_bits + 7 * index)
    size = math.ceil((fill_bits + 7 * len(septets)) / 8)
    return value.to_bytes(size, "little")


def _number_toa(number: str, toa: int | None) -> tuple[int, str]:
    digits = number[1:] if number.startswith("+") else number
    if toa is None:
        if number.startswith("+") and digits.isdigit():
            toa = TOA_INTERNATIONAL
        elif digits.isdigit():
            toa = TOA_UNKNOWN
        else:
            toa = TOA_ALPHANUMERIC
    if toa & 0x70 != 0x50 and not all(c in "0123456789*#abcABC" for c in digits):
        raise ValueError(f"{number!r} is not a number for type of address 0x{toa:02X}")
    return toa, digits


def _swapped_bcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex("".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2)))


def _bcd_byte(value: int) -> int:
    return (value % 10) << 4 | (value // 10)


# ---------------------------------------------------------------- frames into SMS


class Form(enum.Enum):
    """How a terminal puts a frame into SMS (spec 4, SMS)."""

    BINARY = "binary"
    TEXT = "text"
    TEXT_UCS2 = "text-ucs2"
    """The text form as a network that recodes it to UCS2 delivers it."""


def part_size(form: Form, ref_bits: int) -> int:
    """Payload per part of a concatenated SMS: frame octets (binary), or characters."""
    header = 6 if ref_bits == 8 else 7  # UDHL + IEI + IEDL + ref + total + seq
    if form is Form.BINARY:
        return MAX_UD_OCTETS - header
    if form is Form.TEXT:
        return MAX_SEPTETS - math.ceil(header * 8 / 7)  # 153 or 152
    return (MAX_UD_OCTETS - header) // 2  # 67 or 66


def single_size(form: Form) -> int:
    return {Form.BINARY: MAX_UD_OCTETS, Form.TEXT: MAX_SEPTETS, Form.TEXT_UCS2: 70}[form]


def frame_text(frame: bytes) -> str:
    """The text form of a frame: ``SM1 `` and standard base64 with padding."""
    return TEXT_PREFIX + base64.b64encode(frame).decode("ascii")


def split_frame(
    frame: bytes,
    *,
    sender: str,
    timestamp: datetime,
    form: Form = Form.BINARY,
    ref: int = 0,
    ref_bits: int = 8,
    dcs: int | None = None,
    smsc: str = "+4917000000",
    concat_single: bool = False,
) -> list[str]:
    """The SMS-DELIVER PDUs (hex) that carry ``frame``, in part order.

    Binary form: one SMS up to 140 octets, else parts of 134 (8-bit reference) or
    133 (16-bit) octets. Text form: ``SM1 `` + base64, one SMS up to 160
    characters, else parts of 153 or 152. ``concat_single`` sends a short frame as
    a concatenated SMS of one part (allowed by the spec). ``dcs`` defaults to
    0x04 (binary), 0x00 (text) or 0x08 (text recoded to UCS2).
    """
    if dcs is None:
        dcs = {Form.BINARY: DCS_8BIT, Form.TEXT: DCS_GSM7, Form.TEXT_UCS2: DCS_UCS2}[form]
    expected = Alphabet.EIGHT_BIT if form is Form.BINARY else Alphabet.GSM7
    if form is Form.TEXT_UCS2:
        expected = Alphabet.UCS2
    if alphabet_of(dcs) is not expected:
        raise ValueError(f"DCS 0x{dcs:02X} does not fit the {form.value} form")
    payload: Sequence[int] | str = frame if form is Form.BINARY else frame_text(frame)
    if len(payload) <= single_size(form) and not concat_single:
        chunks = [payload]
    else:
        size = part_size(form, ref_bits)
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    if len(chunks) > 255:
        raise ValueError(f"a frame of {len(frame)} bytes needs more than 255 parts")
    pdus = []
    for seq, chunk in enumerate(chunks, start=1):
        concat = None
        if len(chunks) > 1 or concat_single:
            concat = Concat(ref=ref, total=len(chunks), seq=seq, ref_bits=ref_bits)
        message = Deliver(
            sender=sender,
            timestamp=timestamp,
            smsc=smsc,
            text=chunk if isinstance(chunk, str) else "",
            data=bytes(chunk) if not isinstance(chunk, str) else b"",
            dcs=dcs,
            concat=concat,
        )
        pdus.append(deliver_pdu(message))
    return pdus


def text_pdus(
    text: str, *, sender: str, timestamp: datetime, smsc: str = "+4917000000", ref: int = 0
) -> list[str]:
    """A plain text message (an operator notice), GSM 7-bit, concatenated if long."""
    septets = len(text.encode(GSM7))
    if septets <= MAX_SEPTETS:
        return [deliver_pdu(Deliver(sender=sender, timestamp=timestamp, smsc=smsc, text=text))]
    size = part_size(Form.TEXT, 8)
    chunks: list[str] = []
    current = ""
    for char in text:  # never split an escape sequence across parts
        if len((current + char).encode(GSM7)) > size:
            chunks.append(current)
            current = ""
        current += char
    chunks.append(current)
    return [
        deliver_pdu(
            Deliver(
                sender=sender,
                timestamp=timestamp,
                smsc=smsc,
                text=chunk,
                concat=Concat(ref=ref, total=len(chunks), seq=seq),
            )
        )
        for seq, chunk in enumerate(chunks, start=1)
    ]
