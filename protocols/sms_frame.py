"""From decoded SMS-DELIVERs to the frame they carry (spec section 4, SMS).

Sans-I/O: the caller collects the parts (they may arrive a day apart, in any
order) and hands them over once it holds all of them; this module joins and checks.

One SMS, or one concatenated SMS, carries exactly one frame, in one of two forms::

    binary  8-bit data coding (0x04, 0xF4, 0xF5, ...):
            part 1: [UDH concat] frame[0:134]     (133 with a 16-bit reference)
            part 2: [UDH concat] frame[134:268]   ...
    text    GSM 7-bit (or UCS2 where the network recoded it):
            "SM1 " + base64(frame) with padding, split over the parts like the
            binary form; white space and line breaks inside the base64 are ignored

What comes out of :func:`assemble`:

* the frame's bytes, still to be decoded with :func:`protocols.frames.decode`
  (:func:`decode_hourly` does both and the time check); bytes after the frame make
  that decode MALFORMED;
* :class:`~protocols.errors.NotAFrame`: nothing in it looks like a frame (text that
  does not start with exactly ``SM1 ``, case-sensitive and with no white space
  before it; 8-bit data that does not start with the magic ``SM``; a compressed
  message): a person's text or an operator notice, to keep in quarantine with
  sender, time and text;
* :class:`~protocols.errors.Malformed`: it looks like a frame (``SM1 ``) but is
  broken (bad base64, nothing after ``SM1 ``);
* :class:`~protocols.errors.InconsistentParts` or
  :class:`~protocols.errors.MissingParts`: the parts do not make one message.

Parts are duplicates when index, alphabet and user data are equal; their time
stamps may differ (a network may deliver the same part twice).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from protocols import constants as c
from protocols.constants import FrameType
from protocols.errors import (
    InconsistentParts,
    Malformed,
    MissingParts,
    NotAFrame,
    UnsupportedType,
)
from protocols.frames import Hourly, KeyLookup, decode
from protocols.sms_pdu import Alphabet, SmsDeliver, decode_gsm7, decode_ucs2

TEXT_PREFIX = "SM1 "
"""Start of the text form, once, at the start of the whole text."""
FRAME_OCTETS_PER_PART = {8: 134, 16: 133}
"""Octets of a binary frame in each part of a concatenated SMS, by reference size."""
HOUR = 3600

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


@dataclass(frozen=True, slots=True)
class PartKey:
    """Parts of one concatenated SMS have equal keys (spec 4, SMS)."""

    sender: str
    reference: int
    reference_bits: int
    total: int


def part_key(msg: SmsDeliver) -> PartKey | None:
    """The key that groups the parts of a concatenated SMS; None for a single SMS."""
    if msg.concat is None:
        return None
    return PartKey(msg.sender, msg.concat.reference, msg.concat.reference_bits, msg.concat.total)


def sent_at(parts: Sequence[SmsDeliver]) -> datetime:
    """The latest service-centre time stamp of the parts: the time of the message.

    The latest, not the earliest, because that is the lenient choice for the hour
    check: every part is sent after the terminal built the frame, so after its last
    hour started, and a part's stamp can only be early through a service centre's
    clock; one late part is enough to show the hour had begun.
    """
    if not parts:
        raise ValueError("a message needs at least one part")
    return max(part.timestamp for part in parts)


def assemble(parts: Sequence[SmsDeliver]) -> bytes:
    """The frame carried by ``parts`` (one SMS, or every part of a concatenated one).

    Raises NotAFrame, Malformed, InconsistentParts or MissingParts (module docstring).
    """
    ordered = _in_order(parts)
    first = ordered[0]
    when = sent_at(parts)
    if first.compressed:
        raise NotAFrame(
            "compressed user data is no frame",
            sender=first.sender,
            sent_at=when,
            text=None,
            data=b"".join(part.user_data for part in ordered),
        )
    if first.alphabet is Alphabet.EIGHT_BIT:
        raw = b"".join(part.user_data for part in ordered)
        if not raw.startswith(c.MAGIC):
            raise NotAFrame(
                "8-bit data that does not start with the frame magic",
                sender=first.sender,
                sent_at=when,
                text=None,
                data=raw,
            )
        return raw
    # Joined before decoding: an escape or a surrogate pair may be split across parts.
    data = b"".join(part.user_data for part in ordered)
    text = decode_gsm7(data) if first.alphabet is Alphabet.GSM7 else decode_ucs2(data)
    return frame_from_text(text, sender=first.sender, sent_at=when, data=data)


def frame_from_text(text: str, *, sender: str, sent_at: datetime, data: bytes = b"") -> bytes:
    """The frame in the text form ``SM1 <base64>`` (spec 4, SMS)."""
    if not text.startswith(TEXT_PREFIX):
        raise NotAFrame(
            f"text does not start with {TEXT_PREFIX!r}",
            sender=sender,
            sent_at=sent_at,
            text=text,
            data=data,
        )
    raw_text = text.encode("utf-8")
    body = "".join(text[len(TEXT_PREFIX) :].split())
    if not body:
        raise Malformed(f"nothing after {TEXT_PREFIX!r}", raw=raw_text)
    if len(body) % 4 or not _BASE64.fullmatch(body):
        again = TEXT_PREFIX in text[len(TEXT_PREFIX) :]
        hint = f"; {TEXT_PREFIX!r} appears more than once" if again else ""
        raise Malformed(
            f"after {TEXT_PREFIX!r} comes no padded standard base64{hint}", raw=raw_text
        )
    try:
        return binascii.a2b_base64(body, strict_mode=True)
    except binascii.Error as exc:
        raise Malformed(f"base64 after {TEXT_PREFIX!r}: {exc}", raw=raw_text) from None


def check_hourly_time(frame: Hourly, sent_at: datetime, *, raw: bytes = b"") -> None:
    """MALFORMED unless hour_start is a multiple of 3600 and no hour of the batch
    starts after ``sent_at``, the service-centre time stamp (spec 4, SMS)."""
    if sent_at.utcoffset() is None:
        raise ValueError("sent_at must be timezone-aware")
    if frame.hour_start % HOUR:
        raise Malformed(
            f"hour_start {frame.hour_start} is not a multiple of {HOUR}",
            raw=raw,
            terminal_id=frame.terminal_id,
            frame_type=FrameType.HOURLY,
        )
    last_hour = frame.hour_start + HOUR * max(frame.n_hours - 1, 0)
    if last_hour > sent_at.timestamp():
        raise Malformed(
            f"hour starting {last_hour} is after the service-centre time stamp "
            f"{sent_at.isoformat()} ({int(sent_at.timestamp())}): a wrong terminal clock",
            raw=raw,
            terminal_id=frame.terminal_id,
            frame_type=FrameType.HOURLY,
        )


def decode_hourly(parts: Sequence[SmsDeliver], keys: KeyLookup) -> Hourly:
    """The HOURLY frame ``parts`` carry: :func:`assemble`, then
    :func:`protocols.frames.decode`, then :func:`check_hourly_time` with :func:`sent_at`.

    Raises what those raise, and UnsupportedType for a genuine frame of another type
    (only HOURLY travels by SMS).
    """
    raw = assemble(parts)
    frame = decode(raw, keys)
    if not isinstance(frame, Hourly):
        kind = raw[3]
        raise UnsupportedType(
            f"type 0x{kind:02x} is not carried by SMS (only HOURLY)",
            raw=raw,
            terminal_id=frame.terminal_id,
            frame_type=kind,
        )
    check_hourly_time(frame, sent_at(parts), raw=raw)
    return frame


def _in_order(parts: Sequence[SmsDeliver]) -> list[SmsDeliver]:
    """The distinct parts by index; raises when they do not make one message."""
    if not parts:
        raise ValueError("a message needs at least one part")
    keys = {part_key(part) for part in parts}
    if len(keys) > 1:
        shown = ", ".join(sorted(map(str, keys)))
        raise InconsistentParts(f"parts of different messages: {shown}")
    alphabets = {(part.alphabet, part.compressed) for part in parts}
    if len(alphabets) > 1:
        shown = ", ".join(sorted(f"{a}{' compressed' if z else ''}" for a, z in alphabets))
        raise InconsistentParts(f"parts in different alphabets: {shown}")
    (key,) = keys
    total = 1 if key is None else key.total
    by_index: dict[int, SmsDeliver] = {}
    for part in parts:
        index = 1 if part.concat is None else part.concat.index
        if not 1 <= index <= total:
            raise InconsistentParts(f"part {index} of a message of {total} parts")
        seen = by_index.setdefault(index, part)
        if seen.user_data != part.user_data:
            raise InconsistentParts(f"part {index} came twice with different contents")
    missing = tuple(i for i in range(1, total + 1) if i not in by_index)
    if missing:
        raise MissingParts(
            f"{len(missing)} of {total} parts missing: {list(missing)}", missing=missing
        )
    return [by_index[i] for i in range(1, total + 1)]
