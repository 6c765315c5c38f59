"""SMS-SUBMIT PDUs (3GPP TS 23.040 9.2.2.2) for ``AT+CMGS`` in PDU mode, and what an
SMS-STATUS-REPORT's TP-ST says became of one is
:func:`protocols.sms_pdu.delivery_outcome`.

Sans-I/O: a text and a destination in, the PDUs out, each with the ``<length>``
``AT+CMGS`` takes (the TPDU octets, the SMSC field not counted)::

    +------+-------+----+--------+-----+-----+----+-----+----------------------------+
    | SMSC | first | MR | DA     | PID | DCS | VP | UDL | UD: [UDHL 00 03 ref n i] ...|
    +------+-------+----+--------+-----+-----+----+-----+----------------------------+
    | 00   | 1     | 1  | 2+n/2  | 1   | 1   | 1  | 1   | 0..140 octets              |

    SMSC:  00, "the SMSC stored in the modem" (TS 27.005 3.3.1; not in <length>)
    first: bits 0-1 MTI 01 SUBMIT, bit 2 RD 0, bits 3-4 VPF 10 (VP relative, one
           octet), bit 5 SRR (a status report is requested), bit 6 UDHI, bit 7 RP 0
    MR:    00: the modem puts its own reference in and answers it (``+CMGS: <mr>``)
    DA:    count of digits, 0x91 (+digits) or 0x81, swapped BCD digits, F padded
    VP:    relative (9.2.3.12.1): 0..143 (VP+1) x 5 min, 144..167 12 h + (VP-143) x
           30 min, 168..196 (VP-166) days, 197..255 (VP-192) weeks
    UD:    GSM 7-bit (DCS 00) when every character is in the default alphabet or its
           extension table (an escaped character, ``€ [ ] { } ^ ~ | \\``, is two
           septets), else UCS2 (DCS 08, UTF-16BE: a character outside the BMP is a
           surrogate pair, two units)

Decisions:

* One SMS holds 160 septets or 70 UCS2 units. Longer texts are concatenated with
  the 8-bit reference element ``00 03 ref total index`` (9.2.3.24.1): its six octets
  of header leave 153 septets (the header padded to a septet boundary with one fill
  bit) or 67 units a part.
* A part never ends between an escape and its character, nor inside a surrogate
  pair: such a part is one septet or unit shorter, so every part decodes alone.
* At most 255 parts (the element counts them in one octet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from protocols.errors import EncodeError
from protocols.sms_alphabet import ESCAPE, Alphabet, encode_gsm7, encode_ucs2, pack_septets
from protocols.sms_fields import address_field

MAX_SEPTETS = 160
MAX_UCS2_UNITS = 70
PART_SEPTETS = 153
PART_UCS2_UNITS = 67
MAX_PARTS = 255

DCS_GSM7 = 0x00
DCS_UCS2 = 0x08
IEI_CONCAT_8 = 0x00

MTI_SUBMIT = 0x01
VPF_RELATIVE = 0x10
SRR = 0x20
UDHI = 0x40

DEFAULT_VALIDITY = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class SubmitPart:
    """One SMS-SUBMIT: ``pdu`` the hex to write after the prompt, ``length`` for AT+CMGS."""

    pdu: str
    length: int
    index: int
    """1-based part number."""


@dataclass(frozen=True, slots=True)
class Submission:
    """A text as the SMS-SUBMIT PDUs that carry it, in part order."""

    destination: str
    alphabet: Alphabet
    parts: tuple[SubmitPart, ...]
    concat_reference: int | None
    """The 8-bit reference of the concatenation element; None for a single SMS."""


def encode_submit(
    text: str,
    destination: str,
    *,
    concat_reference: int = 0,
    status_report: bool = True,
    validity: timedelta = DEFAULT_VALIDITY,
) -> Submission:
    """The SMS-SUBMIT PDUs of ``text`` to ``destination`` (``+32470123456``).

    ``concat_reference`` (0..255) tells the parts of this message from those of the
    caller's other long messages to the same person. Raises EncodeError for a bad
    number, an empty text, a reference out of range or more than 255 parts.
    """
    if not text:
        raise EncodeError("an SMS needs a text")
    if not 0 <= concat_reference <= 0xFF:
        raise EncodeError(f"concatenation reference {concat_reference} is not 0..255")
    try:
        address = address_field(destination)
    except ValueError as exc:
        raise EncodeError(str(exc)) from None
    septets = encode_gsm7(text)
    alphabet = Alphabet.GSM7 if septets is not None else Alphabet.UCS2
    chunks = _gsm7_chunks(septets) if septets is not None else _ucs2_chunks(encode_ucs2(text))
    if len(chunks) > MAX_PARTS:
        raise EncodeError(f"a text of {len(text)} characters needs more than {MAX_PARTS} parts")
    first = MTI_SUBMIT | VPF_RELATIVE | (SRR if status_report else 0)
    head = bytes((first | (UDHI if len(chunks) > 1 else 0), 0x00)) + address
    dcs = DCS_GSM7 if alphabet is Alphabet.GSM7 else DCS_UCS2
    fields = head + bytes((0x00, dcs, relative_validity(validity)))
    parts = []
    for index, chunk in enumerate(chunks, start=1):
        udh = b""
        if len(chunks) > 1:
            udh = bytes((5, IEI_CONCAT_8, 3, concat_reference, len(chunks), index))
        udl, ud = _user_data(alphabet, udh, chunk)
        tpdu = fields + bytes((udl,)) + ud
        parts.append(SubmitPart(pdu="00" + tpdu.hex().upper(), length=len(tpdu), index=index))
    reference = concat_reference if len(chunks) > 1 else None
    return Submission(destination, alphabet, tuple(parts), reference)


def relative_validity(period: timedelta) -> int:
    """The TP-VP octet (relative format) of the longest period not over ``period``,
    at least 5 minutes and at most 63 weeks."""
    minutes = int(period.total_seconds() // 60)
    days = minutes // 1440
    if days >= 35:  # whole weeks from 5 on: 197..255
        return min(192 + days // 7, 255)
    if days >= 2:  # whole days from 2 to 30: 168..196
        return 166 + min(days, 30)
    if minutes > 720:  # 12 h and steps of 30 minutes up to 24 h: 144..167
        return min(143 + (minutes - 720) // 30, 167)
    return max(minutes // 5 - 1, 0)  # steps of 5 minutes up to 12 h: 0..143


def _gsm7_chunks(septets: bytes) -> list[bytes]:
    if len(septets) <= MAX_SEPTETS:
        return [septets]
    chunks = []
    start = 0
    while start < len(septets):
        end = min(start + PART_SEPTETS, len(septets))
        # An escape as a part's last septet would part from its character.
        if end < len(septets) and _ends_in_escape(septets[start:end]):
            end -= 1
        chunks.append(septets[start:end])
        start = end
    return chunks


def _ends_in_escape(septets: bytes) -> bool:
    """Whether the last septet is an escape that starts a pair (not the second of one)."""
    run = len(septets) - len(septets.rstrip(bytes((ESCAPE,))))
    return run % 2 == 1


def _ucs2_chunks(octets: bytes) -> list[bytes]:
    if len(octets) <= 2 * MAX_UCS2_UNITS:
        return [octets]
    chunks = []
    start = 0
    while start < len(octets):
        end = min(start + 2 * PART_UCS2_UNITS, len(octets))
        if end < len(octets) and 0xD8 <= octets[end - 2] <= 0xDB:  # a high surrogate
            end -= 2
        chunks.append(octets[start:end])
        start = end
    return chunks


def _user_data(alphabet: Alphabet, udh: bytes, chunk: bytes) -> tuple[int, bytes]:
    """(TP-UDL, TP-UD): septets for GSM 7-bit, header and fill bits included; octets else."""
    if alphabet is Alphabet.UCS2:
        return len(udh) + len(chunk), udh + chunk
    fill = (7 - len(udh) * 8 % 7) % 7
    header_septets = (len(udh) * 8 + fill) // 7
    return header_septets + len(chunk), udh + pack_septets(chunk, fill)
