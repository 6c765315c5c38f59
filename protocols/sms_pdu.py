"""SMS-DELIVER and SMS-STATUS-REPORT PDUs (3GPP TS 23.040) to frozen dataclasses.

Sans-I/O: a PDU in (hex ``str`` as ``+CMGR``/``+CMGL`` print it in PDU mode, or the
octets as ``bytes``), a decoded message out. Short or inconsistent input raises
:class:`~protocols.errors.SmsDecodeError` and nothing else.

SMS-DELIVER (TS 23.040 9.2.2.1), with the SMSC field a modem puts in front::

    +-----+-----+-------+-------+-----+-----+-----+-------+-----+----------------------+
    | len | toa | digits| first | OA  | PID | DCS | SCTS  | UDL | UD                   |
    +-----+-----+-------+-------+-----+-----+-----+-------+-----+----------------------+
    | SMSC field (24.011)   | 1     | 2+n | 1   | 1   | 7     | 1   | [UDHL UDH fill] body |

    first: bit 0-1 MTI (00 DELIVER, 10 STATUS-REPORT), bit 2 MMS, bit 3 LP,
           bit 5 SRI, bit 6 UDHI (the UD starts with a header), bit 7 RP
    OA:    count of semi-octets used, type of address, swapped BCD digits (F pads an
           odd count); alphanumeric (type of number 101) is packed GSM 7-bit
    SCTS:  yy mm dd hh mm ss tz, two swapped BCD digits each; tz in quarter hours,
           bit 3 of the tens digit is the sign
    UDL:   septets for GSM 7-bit (header and fill bits included), octets otherwise

SMS-STATUS-REPORT (TS 23.040 9.2.2.3)::

    | SMSC field | first | MR | RA | SCTS (7) | DT (7) | ST | [PI [PID] [DCS] [UDL UD]] |

Decisions:

* ``bytes`` input is the octets themselves; a modem's hex line is a ``str``.
* ``SmsDeliver.user_data`` is what follows the user data header: for GSM 7-bit the
  unpacked septets, one per byte (values 0..127, fill bits dropped), so parts of a
  concatenated message are joined before decoding and an escape or a UCS2 surrogate
  pair split across parts survives; for every other coding the octets.
* GSM 7-bit is decoded with the ``gsm0338`` codec and the error handler below: an
  escape (0x1B) whose next septet the extension table does not define is shown as a
  space, as TS 23.038 6.2.1 (note 1) and the 0x1B entry of 6.2.1.1 ask of a receiver,
  and the next septet is then decoded from the default table (6.2.1.1, "display the
  character shown in the main GSM 7 bit default alphabet table"). A lone escape at the
  end is a space as well. So every septet that is not part of a defined escape pair
  gives exactly one character: nothing dropped, nothing invented, and the exact
  septets stay in ``user_data``.
* UCS2 is UTF-16BE (surrogate pairs decode to one character); an unpaired surrogate
  or an odd trailing octet comes out backslash-escaped (``\\xd8\\x3d``), readable and
  reversible, never a lone surrogate that no database takes.
* The two-digit year is 19yy for 70..99 and 20yy for 00..69 (as POSIX ``%y``).
* A concatenation element with total 0, index 0 or index over total is ignored, as
  TS 23.040 9.2.3.24.1 says (it stays in ``elements``); of several concatenation
  elements the last one counts (9.2.3.24).
* A compressed message (TS 23.042) is not decompressed: ``compressed`` is set, its
  UDL counts octets and ``text`` is None.
* Bytes after the user data (or after the status) make the PDU inconsistent.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum

import gsm0338  # type: ignore[import-untyped]  # noqa: F401  (registers the "gsm03.38" codec)

from protocols.errors import SmsDecodeError

GSM7 = "gsm03.38"
"""Name of the codec the ``gsm0338`` package registers."""
GSM7_ERRORS = "smiley-gsm7-escape-as-space"
"""Name of the decode error handler this module registers (see the module docstring)."""

ESCAPE = 0x1B
MAX_SEPTETS = 160
MAX_UD_OCTETS = 140
MAX_ADDRESS_DIGITS = 20
MAX_SMSC_OCTETS = 11
"""Length octet of the SMSC field: its type of address and up to 10 octets of digits."""

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08

MTI_DELIVER = 0x00
MTI_STATUS_REPORT = 0x02

TON_INTERNATIONAL = 0x1
TON_ALPHANUMERIC = 0x5

_UDHI = 0x40
_BCD = "0123456789*#abc"
"""Semi-octet values 0..14 of an address (TS 23.040 9.1.2.5); 15 is the filler."""


def _escape_as_space(error: UnicodeError) -> tuple[str, int]:
    """gsm0338 reports an escape and a septet its extension table lacks: show a space
    for the escape and go on with that septet (TS 23.038 6.2.1, 6.2.1.1)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return " ", error.start + 1


codecs.register_error(GSM7_ERRORS, _escape_as_space)


class Alphabet(StrEnum):
    """Character set of the user data (TS 23.038 section 4)."""

    GSM7 = "gsm7"
    EIGHT_BIT = "8bit"
    UCS2 = "ucs2"


@dataclass(frozen=True, slots=True)
class Concat:
    """Concatenation element of a user data header (TS 23.040 9.2.3.24.1 and .8)."""

    reference: int
    reference_bits: int
    """8 (IEI 0x00) or 16 (IEI 0x08)."""
    total: int
    index: int
    """1-based."""


@dataclass(frozen=True, slots=True)
class InformationElement:
    """One element of a user data header, as it came (TS 23.040 9.2.3.24)."""

    iei: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DataCoding:
    """What a data coding scheme octet says (TS 23.038 section 4)."""

    alphabet: Alphabet
    message_class: int | None
    compressed: bool = False


@dataclass(frozen=True, slots=True)
class SmsDeliver:
    """An SMS-DELIVER: a message from ``sender`` as the service centre delivered it."""

    smsc: str | None
    sender: str
    sender_toa: int
    pid: int
    dcs: int
    alphabet: Alphabet
    message_class: int | None
    timestamp: datetime
    """Service-centre time stamp, aware, in the zone the service centre gave."""
    concat: Concat | None
    user_data: bytes
    """After the header: septets (one per byte) for GSM 7-bit, octets otherwise."""
    text: str | None
    """Decoded for GSM 7-bit and UCS2; None for 8-bit data and compressed messages."""
    compressed: bool = False
    elements: tuple[InformationElement, ...] = ()
    """Every element of the user data header, in order, the concatenation one included."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    """An SMS-STATUS-REPORT: what became of a message this side sent."""

    smsc: str | None
    message_reference: int
    recipient: str
    recipient_toa: int
    timestamp: datetime
    """TP-SCTS: when the service centre received the message reported on."""
    discharge_time: datetime
    """TP-DT: when it was delivered, or the status last changed."""
    status: int
    pid: int | None = None
    dcs: int | None = None
    user_data: bytes = b""
    text: str | None = None

    @property
    def completed(self) -> bool:
        """The service centre is done with the message (TP-ST 0x00..0x1F)."""
        return self.status < 0x20


Sms = SmsDeliver | StatusReport


# ---------------------------------------------------------------- entry point


def decode_pdu(pdu: str | bytes, *, has_smsc: bool = True) -> Sms:
    """Decode one SMS-DELIVER or SMS-STATUS-REPORT; ``has_smsc``: the SMSC field leads."""
    reader = _Reader(_octets(pdu))
    smsc = _smsc(reader) if has_smsc else None
    first = reader.u8("first octet")
    mti = first & 0x03
    if mti == MTI_DELIVER:
        message: Sms = _deliver(reader, smsc, first)
    elif mti == MTI_STATUS_REPORT:
        message = _status_report(reader, smsc, first)
    else:
        raise reader.error(f"message type indicator {mti} is neither DELIVER nor STATUS-REPORT")
    if reader.left:
        raise reader.error(f"{reader.left} octets after the end of the message")
    return message


def _octets(pdu: str | bytes) -> bytes:
    if isinstance(pdu, str):
        try:
            return bytes.fromhex(pdu)
        except ValueError:
            raise SmsDecodeError(
                "PDU is not an even number of hex digits", raw=pdu.encode("utf-8", "replace")
            ) from None
    return bytes(pdu)


class _Reader:
    """Octets and a position; running short is an :class:`SmsDecodeError`."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def error(self, reason: str) -> SmsDecodeError:
        return SmsDecodeError(reason, raw=self.data)

    def take(self, count: int, what: str) -> bytes:
        if count > self.left:
            raise self.error(f"{what}: needs {count} octets at offset {self.pos}, {self.left} left")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]


# ---------------------------------------------------------------- the two messages


def _deliver(reader: _Reader, smsc: str | None, first: int) -> SmsDeliver:
    sender_toa, sender = _address(reader, "TP-OA")
    pid = reader.u8("TP-PID")
    dcs = reader.u8("TP-DCS")
    coding = data_coding(dcs)
    timestamp = _timestamp(reader, "TP-SCTS")
    udl = reader.u8("TP-UDL")
    elements, user_data, text = _user_data(reader, coding, udl, header=bool(first & _UDHI))
    return SmsDeliver(
        smsc=smsc,
        sender=sender,
        sender_toa=sender_toa,
        pid=pid,
        dcs=dcs,
        alphabet=coding.alphabet,
        message_class=coding.message_class,
        timestamp=timestamp,
        concat=_concat(elements, reader),
        user_data=user_data,
        text=text,
        compressed=coding.compressed,
        elements=elements,
    )


def _status_report(reader: _Reader, smsc: str | None, first: int) -> StatusReport:
    reference = reader.u8("TP-MR")
    recipient_toa, recipient = _address(reader, "TP-RA")
    timestamp = _timestamp(reader, "TP-SCTS")
    discharge_time = _timestamp(reader, "TP-DT")
    status = reader.u8("TP-ST")
    pid = dcs = None
    user_data = b""
    text = None
    if reader.left:
        indicator = reader.u8("TP-PI")
        extension = indicator
        while extension & 0x80:  # further TP-PI octets, all bits reserved: skip
            extension = reader.u8("TP-PI extension")
        if indicator & 0x01:
            pid = reader.u8("TP-PID")
        if indicator & 0x02:
            dcs = reader.u8("TP-DCS")
        if indicator & 0x04:
            udl = reader.u8("TP-UDL")
            coding = data_coding(0 if dcs is None else dcs)
            _, user_data, text = _user_data(reader, coding, udl, header=bool(first & _UDHI))
    return StatusReport(
        smsc=smsc,
        message_reference=reference,
        recipient=recipient,
        recipient_toa=recipient_toa,
        timestamp=timestamp,
        discharge_time=discharge_time,
        status=status,
        pid=pid,
        dcs=dcs,
        user_data=user_data,
        text=text,
    )


# ---------------------------------------------------------------- addresses


def _smsc(reader: _Reader) -> str | None:
    """The SMSC field (TS 24.011 8.2.5.1): length in octets incl. the type of address."""
    length = reader.u8("SMSC length")
    if length == 0:
        return None
    if length > MAX_SMSC_OCTETS:
        raise reader.error(f"SMSC length {length} exceeds {MAX_SMSC_OCTETS} octets")
    toa = reader.u8("SMSC type of address")
    value = reader.take(length - 1, "SMSC address")
    semi_octets = 2 * len(value)
    if value and value[-1] >> 4 == 0x0F:
        semi_octets -= 1
    return _address_value(reader, toa, value, semi_octets, "SMSC")


def _address(reader: _Reader, what: str) -> tuple[int, str]:
    """TP-OA or TP-RA (TS 23.040 9.1.2.5): (type of address, the address as text)."""
    semi_octets = reader.u8(f"{what} length")
    if semi_octets > MAX_ADDRESS_DIGITS:
        raise reader.error(f"{what} length {semi_octets} exceeds {MAX_ADDRESS_DIGITS}")
    toa = reader.u8(f"{what} type of address")
    value = reader.take((semi_octets + 1) // 2, what)
    return toa, _address_value(reader, toa, value, semi_octets, what)


def _address_value(reader: _Reader, toa: int, value: bytes, semi_octets: int, what: str) -> str:
    ton = (toa >> 4) & 0x07
    if ton == TON_ALPHANUMERIC:
        # "Megafon" in 13 semi-octets: 52 bits hold 7 septets, not 8 (no trailing "@").
        return decode_gsm7(unpack_septets(value, semi_octets * 4 // 7))
    digits = []
    for i in range(semi_octets):
        nibble = value[i // 2] >> 4 if i % 2 else value[i // 2] & 0x0F
        if nibble == 0x0F:
            raise reader.error(f"{what}: filler semi-octet inside the digits")
        digits.append(_BCD[nibble])
    number = "".join(digits)
    return "+" + number if ton == TON_INTERNATIONAL else number


# ---------------------------------------------------------------- time stamps


def _timestamp(reader: _Reader, what: str) -> datetime:
    """Seven octets of swapped BCD (TS 23.040 9.2.3.11), the zone in quarter hours."""
    octets = reader.take(7, what)
    fields = []
    for octet in octets[:6]:
        tens, units = octet & 0x0F, octet >> 4
        if tens > 9 or units > 9:
            raise reader.error(f"{what}: 0x{octet:02X} is not two BCD digits")
        fields.append(tens * 10 + units)
    zone = octets[6]
    if zone >> 4 > 9:
        raise reader.error(f"{what}: time zone 0x{zone:02X} is not BCD")
    quarters = (zone & 0x07) * 10 + (zone >> 4)
    offset = timedelta(minutes=15 * quarters)
    if zone & 0x08:
        offset = -offset
    yy, month, day, hour, minute, second = fields
    year = yy + (1900 if yy >= 70 else 2000)
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError as exc:
        raise reader.error(f"{what}: {exc}") from None


# ---------------------------------------------------------------- data coding


def data_coding(dcs: int) -> DataCoding:
    """Alphabet, message class and compression a TP-DCS octet names (TS 23.038 4).

    Reserved codings are taken as the GSM 7-bit default alphabet, as 23.038 asks.
    """
    group = dcs >> 4
    if group <= 0x7:  # 00xx general data coding, 01xx the same marked for deletion
        alphabet = (Alphabet.GSM7, Alphabet.EIGHT_BIT, Alphabet.UCS2, Alphabet.GSM7)[
            (dcs >> 2) & 0x03
        ]
        message_class = dcs & 0x03 if dcs & 0x10 else None
        return DataCoding(alphabet, message_class, compressed=bool(dcs & 0x20))
    if group == 0xF:  # data coding / message class: bit 2 8-bit data, bits 0-1 the class
        alphabet = Alphabet.EIGHT_BIT if dcs & 0x04 else Alphabet.GSM7
        return DataCoding(alphabet, dcs & 0x03)
    if group == 0xE:  # message waiting indication, store, UCS2
        return DataCoding(Alphabet.UCS2, None)
    # 1000..1011 reserved; 1100 and 1101 message waiting indication, GSM 7-bit
    return DataCoding(Alphabet.GSM7, None)


# ---------------------------------------------------------------- user data


def _user_data(
    reader: _Reader, coding: DataCoding, udl: int, *, header: bool
) -> tuple[tuple[InformationElement, ...], bytes, str | None]:
    """(header elements, user data after the header, text) of TP-UD."""
    septets = coding.alphabet is Alphabet.GSM7 and not coding.compressed
    if septets:
        if udl > MAX_SEPTETS:
            raise reader.error(f"TP-UDL {udl} exceeds {MAX_SEPTETS} septets")
        size = (udl * 7 + 7) // 8
    else:
        if udl > MAX_UD_OCTETS:
            raise reader.error(f"TP-UDL {udl} exceeds {MAX_UD_OCTETS} octets")
        size = udl
    ud = reader.take(size, f"TP-UD of {udl} {'septets' if septets else 'octets'}")
    elements: tuple[InformationElement, ...] = ()
    header_octets = 0
    if header:
        if not ud:
            raise reader.error("TP-UDHI is set but the user data is empty")
        header_octets = 1 + ud[0]
        if header_octets > len(ud):
            raise reader.error(f"TP-UDHL {ud[0]} runs past the {len(ud)} octets of TP-UD")
        elements = _elements(reader, ud[1:header_octets])
    if septets:
        # The header is padded with fill bits to a septet boundary (TS 23.040 9.2.3.24).
        header_septets = (header_octets * 8 + 6) // 7
        if header_septets > udl:
            raise reader.error(f"user data header of {header_octets} octets exceeds TP-UDL {udl}")
        body = unpack_septets(ud, udl)[header_septets:]
        return elements, body, decode_gsm7(body)
    body = ud[header_octets:]
    if coding.compressed or coding.alphabet is Alphabet.EIGHT_BIT:
        return elements, body, None
    return elements, body, decode_ucs2(body)


def _elements(reader: _Reader, header: bytes) -> tuple[InformationElement, ...]:
    elements = []
    pos = 0
    while pos < len(header):
        if pos + 2 > len(header):
            raise reader.error(f"user data header: element at {pos} has no length octet")
        iei, length = header[pos], header[pos + 1]
        data = header[pos + 2 : pos + 2 + length]
        if len(data) != length:
            raise reader.error(
                f"user data header: element 0x{iei:02X} of {length} octets runs past the header"
            )
        elements.append(InformationElement(iei, data))
        pos += 2 + length
    return tuple(elements)


def _concat(elements: tuple[InformationElement, ...], reader: _Reader) -> Concat | None:
    concat = None
    for element in elements:
        if element.iei == IEI_CONCAT_8:
            if len(element.data) != 3:
                raise reader.error(f"8-bit concatenation element of {len(element.data)} octets")
            reference, total, index = element.data
            bits = 8
        elif element.iei == IEI_CONCAT_16:
            if len(element.data) != 4:
                raise reader.error(f"16-bit concatenation element of {len(element.data)} octets")
            reference = int.from_bytes(element.data[:2], "big")
            total, index = element.data[2], element.data[3]
            bits = 16
        else:
            continue
        if 1 <= index <= total:  # else "ignore the whole element" (23.040 9.2.3.24.1)
            concat = Concat(reference, bits, total, index)
    return concat


# ---------------------------------------------------------------- alphabets


def unpack_septets(data: bytes, count: int) -> bytes:
    """The first ``count`` septets packed into ``data`` (TS 23.038 6.1.2.1), one per byte."""
    if count * 7 > len(data) * 8:
        raise SmsDecodeError(f"{len(data)} octets cannot hold {count} septets", raw=data)
    value = int.from_bytes(data, "little")
    return bytes((value >> (7 * i)) & 0x7F for i in range(count))


def decode_gsm7(septets: bytes) -> str:
    """Text of GSM 7-bit default alphabet septets (one per byte), escapes included.

    An escape the extension table does not define shows as a space (module docstring).
    """
    if any(septet > 0x7F for septet in septets):
        raise SmsDecodeError("a septet is over 0x7F", raw=bytes(septets))
    text = bytes(septets).decode(GSM7, GSM7_ERRORS)
    if septets and septets[-1] == ESCAPE:
        # gsm0338 drops a trailing escape; it is always a lone one, since the handler
        # never pairs an escape with the escape after it.
        text += " "
    return text


def decode_ucs2(data: bytes) -> str:
    """Text of UCS2 user data, read as UTF-16BE; broken units come out backslash-escaped."""
    return bytes(data).decode("utf-16-be", "backslashreplace")
