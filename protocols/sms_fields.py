"""The fields SMS TPDUs share (3GPP TS 23.040 9.1.2.5, 9.2.3.11; the SMSC field of
TS 24.011 8.2.5.1): addresses and service-centre time stamps, read from octets and
written to them. Sans-I/O; a short or bad field raises
:class:`~protocols.errors.SmsDecodeError` (reading) or ``ValueError`` (writing).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from protocols.errors import SmsDecodeError
from protocols.sms_alphabet import decode_gsm7, unpack_septets

MAX_ADDRESS_DIGITS = 20
MAX_SMSC_OCTETS = 11
"""Length octet of the SMSC field: its type of address and up to 10 octets of digits."""

TON_INTERNATIONAL = 0x1
TON_ALPHANUMERIC = 0x5
TOA_INTERNATIONAL = 0x91
TOA_UNKNOWN = 0x81

_BCD = "0123456789*#abc"
"""Semi-octet values 0..14 of an address (TS 23.040 9.1.2.5); 15 is the filler."""


def octets(pdu: str | bytes) -> bytes:
    if isinstance(pdu, str):
        try:
            return bytes.fromhex(pdu)
        except ValueError:
            raise SmsDecodeError(
                "PDU is not an even number of hex digits", raw=pdu.encode("utf-8", "replace")
            ) from None
    return bytes(pdu)


class Reader:
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


# ---------------------------------------------------------------- addresses


def read_smsc(reader: Reader) -> str | None:
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


def read_address(reader: Reader, what: str) -> tuple[int, str]:
    """TP-OA or TP-RA (TS 23.040 9.1.2.5): (type of address, the address as text)."""
    semi_octets = reader.u8(f"{what} length")
    if semi_octets > MAX_ADDRESS_DIGITS:
        raise reader.error(f"{what} length {semi_octets} exceeds {MAX_ADDRESS_DIGITS}")
    toa = reader.u8(f"{what} type of address")
    value = reader.take((semi_octets + 1) // 2, what)
    return toa, _address_value(reader, toa, value, semi_octets, what)


def _address_value(reader: Reader, toa: int, value: bytes, semi_octets: int, what: str) -> str:
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


def read_timestamp(reader: Reader, what: str) -> datetime:
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


def address_field(number: str) -> bytes:
    """TP-DA of a phone number (TS 23.040 9.1.2.5): the count of digits, the type of
    address (0x91 international for ``+digits``, 0x81 unknown for digits) and the
    digits as swapped BCD, an odd count padded with F. Raises ValueError otherwise."""
    digits = number[1:] if number.startswith("+") else number
    if not digits.isdigit() or not digits.isascii() or len(digits) > MAX_ADDRESS_DIGITS:
        raise ValueError(f"not a phone number of 1..{MAX_ADDRESS_DIGITS} digits: {number!r}")
    toa = TOA_INTERNATIONAL if number.startswith("+") else TOA_UNKNOWN
    padded = digits + "F" * (len(digits) % 2)
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes((len(digits), toa)) + bytes.fromhex(swapped)
