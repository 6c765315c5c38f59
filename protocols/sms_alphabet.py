"""The GSM 7-bit default alphabet, UCS2 and the data coding scheme (3GPP TS 23.038),
shared by the SMS-DELIVER decoder and the SMS-SUBMIT encoder.

Sans-I/O. Septets are kept one per byte (values 0..127) between packing and text.

Decoding:

* GSM 7-bit is decoded with the ``gsm0338`` codec and the error handler here: an
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

Encoding: :func:`encode_gsm7` gives the septets of a text that fits the default
alphabet and its extension table (an escaped character is two septets), or None;
:func:`ucs2_units` counts UTF-16 code units, so a character outside the BMP counts two.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from enum import StrEnum

import gsm0338  # type: ignore[import-untyped]  # noqa: F401  (registers the "gsm03.38" codec)

from protocols.errors import SmsDecodeError

GSM7 = "gsm03.38"
"""Name of the codec the ``gsm0338`` package registers."""
GSM7_ERRORS = "smiley-gsm7-escape-as-space"
"""Name of the decode error handler this module registers (see the module docstring)."""

ESCAPE = 0x1B


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
class DataCoding:
    """What a data coding scheme octet says (TS 23.038 section 4)."""

    alphabet: Alphabet
    message_class: int | None
    compressed: bool = False


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


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Septets (one per byte) packed least significant bit first after ``fill_bits``
    zero bits (TS 23.038 6.1.2.1.1; the fill aligns septets after a user data header)."""
    if any(septet > 0x7F for septet in septets):
        raise ValueError("a septet is over 0x7F")
    value = 0
    for index, septet in enumerate(septets):
        value |= septet << (fill_bits + 7 * index)
    return value.to_bytes((fill_bits + 7 * len(septets) + 7) // 8, "little")


def encode_gsm7(text: str) -> bytes | None:
    """The septets of ``text`` (escapes as two), or None when it does not fit the alphabet."""
    try:
        return bytes(text.encode(GSM7))
    except UnicodeEncodeError:
        return None


def encode_ucs2(text: str) -> bytes:
    """UTF-16BE: what UCS2 user data carries (surrogate pairs for characters past the BMP)."""
    return text.encode("utf-16-be")


def ucs2_units(text: str) -> int:
    """UTF-16 code units of ``text``: two for each character outside the BMP."""
    return len(encode_ucs2(text)) // 2
