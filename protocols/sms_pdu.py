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

Decisions (the alphabets' own, GSM 7-bit escapes and broken UCS2, are in
:mod:`protocols.sms_alphabet`; addresses and time stamps in :mod:`protocols.sms_fields`):

* ``bytes`` input is the octets themselves; a modem's hex line is a ``str``.
* ``SmsDeliver.user_data`` is what follows the user data header: for GSM 7-bit the
  unpacked septets, one per byte (values 0..127, fill bits dropped), so parts of a
  concatenated message are joined before decoding and an escape or a UCS2 surrogate
  pair split across parts survives; for every other coding the octets.
* The two-digit year is 19yy for 70..99 and 20yy for 00..69 (as POSIX ``%y``).
* A concatenation element with total 0, index 0 or index over total is ignored, as
  TS 23.040 9.2.3.24.1 says (it stays in ``elements``); of several concatenation
  elements the last one counts (9.2.3.24).
* A compressed message (TS 23.042) is not decompressed: ``compressed`` is set, its
  UDL counts octets and ``text`` is None.
* Bytes after the user data (or after the status) make the PDU inconsistent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from protocols.sms_alphabet import (
    GSM7,
    GSM7_ERRORS,
    Alphabet,
    DataCoding,
    data_coding,
    decode_gsm7,
    decode_ucs2,
    unpack_septets,
)
from protocols.sms_fields import Reader, octets, read_address, read_smsc, read_timestamp

__all__ = [
    "GSM7",
    "GSM7_ERRORS",
    "Alphabet",
    "Concat",
    "DataCoding",
    "DeliveryOutcome",
    "InformationElement",
    "Sms",
    "SmsDeliver",
    "StatusReport",
    "data_coding",
    "decode_gsm7",
    "decode_pdu",
    "decode_ucs2",
    "delivery_outcome",
    "unpack_septets",
]

MAX_SEPTETS = 160
MAX_UD_OCTETS = 140

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08

MTI_DELIVER = 0x00
MTI_STATUS_REPORT = 0x02

_UDHI = 0x40


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


class DeliveryOutcome(StrEnum):
    """What TP-ST of an SMS-STATUS-REPORT says (TS 23.040 9.2.3.15)."""

    DELIVERED = "delivered"
    """0x00..0x1F: the transaction is complete (received, forwarded, replaced)."""
    STILL_TRYING = "still-trying"
    """0x20..0x3F: a temporary error, the service centre still tries."""
    FAILED_PERMANENT = "failed-permanent"
    """0x40..0x7F: a permanent error, or a temporary one the centre no longer tries."""


def delivery_outcome(status: int) -> DeliveryOutcome:
    """The outcome of a TP-ST value; reserved values count as their range says
    (0x80 and over: "the service centre specific" values, taken as failed)."""
    if status < 0x20:
        return DeliveryOutcome.DELIVERED
    if status < 0x40:
        return DeliveryOutcome.STILL_TRYING
    return DeliveryOutcome.FAILED_PERMANENT


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

    @property
    def outcome(self) -> DeliveryOutcome:
        """Delivered, still trying or failed for good (TS 23.040 9.2.3.15)."""
        return delivery_outcome(self.status)


Sms = SmsDeliver | StatusReport


# ---------------------------------------------------------------- entry point


def decode_pdu(pdu: str | bytes, *, has_smsc: bool = True) -> Sms:
    """Decode one SMS-DELIVER or SMS-STATUS-REPORT; ``has_smsc``: the SMSC field leads."""
    reader = Reader(octets(pdu))
    smsc = read_smsc(reader) if has_smsc else None
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


# ---------------------------------------------------------------- the two messages


def _deliver(reader: Reader, smsc: str | None, first: int) -> SmsDeliver:
    sender_toa, sender = read_address(reader, "TP-OA")
    pid = reader.u8("TP-PID")
    dcs = reader.u8("TP-DCS")
    coding = data_coding(dcs)
    timestamp = read_timestamp(reader, "TP-SCTS")
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


def _status_report(reader: Reader, smsc: str | None, first: int) -> StatusReport:
    reference = reader.u8("TP-MR")
    recipient_toa, recipient = read_address(reader, "TP-RA")
    timestamp = read_timestamp(reader, "TP-SCTS")
    discharge_time = read_timestamp(reader, "TP-DT")
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


# ---------------------------------------------------------------- user data


def _user_data(
    reader: Reader, coding: DataCoding, udl: int, *, header: bool
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


def _elements(reader: Reader, header: bytes) -> tuple[InformationElement, ...]:
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


def _concat(elements: tuple[InformationElement, ...], reader: Reader) -> Concat | None:
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
