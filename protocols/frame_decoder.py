"""Bytes to frames: the checks of spec section 2 in their order, then the payload by type.

A receiver checks magic, version, length, crc, terminal known, tag, then the
payload of the type; the first failing check decides the error. The type byte
is checked in the last step (it is part of "the payload of the type"), so a
frame must be genuine before its type is judged: see docs/protocol-notes.md.
"""

from __future__ import annotations

import hmac
import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass

import construct as cs

from protocols import constants as c
from protocols.constants import FrameType, NakCode
from protocols.errors import (
    BadCrc,
    BadMagic,
    BadTag,
    DecodeError,
    FrameTooLong,
    Malformed,
    UnknownTerminal,
    UnsupportedType,
    UnsupportedVersion,
)
from protocols.frame_model import (
    Ack,
    Frame,
    Heartbeat,
    Hello,
    Hourly,
    Nak,
    Presses,
    PressRecord,
    Welcome,
)
from protocols.layout import (
    ACK,
    HEADER,
    HEARTBEAT,
    HELLO,
    HOUR_PACKING,
    HOUR_SIZE,
    HOURLY_HEAD,
    HOURLY_HEAD_SIZE,
    NAK,
    PRESSES_HEAD,
    PRESSES_HEAD_SIZE,
    RECORD_PACKING,
    RECORD_SIZE,
    WELCOME,
    crc16,
    tag,
)

KeyLookup = Callable[[int], bytes | None]
"""Returns a terminal's 16-byte key, or None when the terminal is not registered."""


@dataclass(frozen=True, slots=True)
class Header:
    """The first 10 bytes of a frame.

    ``frame_type`` is a :class:`FrameType` when the byte names one, else the
    byte itself: the type is judged last, with the payload (section 2).
    """

    version: int
    frame_type: FrameType | int
    terminal_id: int
    length: int

    @property
    def frame_size(self) -> int:
        return c.OVERHEAD + self.length

    def error(
        self, kind: type[DecodeError], reason: str, raw: bytes, ref_seq: int = 0
    ) -> DecodeError:
        """An error of ``kind`` about the frame this header starts."""
        return kind(
            reason,
            raw=raw,
            terminal_id=self.terminal_id,
            frame_type=int(self.frame_type),
            ref_seq=ref_seq,
        )


def decode_header(data: bytes) -> Header:
    """Check magic, version and length of the first 10 bytes of a frame."""
    if len(data) < c.HEADER_SIZE:
        raise Malformed(f"{len(data)} bytes cannot hold a frame header", raw=bytes(data))
    if data[:2] != c.MAGIC:
        raise BadMagic(f"bad magic {bytes(data[:2]).hex()}", raw=bytes(data[: c.HEADER_SIZE]))
    parsed = HEADER.parse(data[: c.HEADER_SIZE])
    header = Header(parsed.version, _type_of(parsed.type), parsed.terminal_id, parsed.length)
    head_raw = bytes(data[: c.HEADER_SIZE])
    if header.version != c.VERSION:
        raise header.error(
            UnsupportedVersion, f"version {header.version} is not supported", head_raw
        )
    if header.length > c.MAX_PAYLOAD:
        raise header.error(
            FrameTooLong, f"payload length {header.length} exceeds {c.MAX_PAYLOAD}", head_raw
        )
    return header


def decode(data: bytes, keys: KeyLookup, *, zero_tag_naks: bool = False) -> Frame:
    """Decode exactly one frame; bytes missing or left over make it MALFORMED.

    ``zero_tag_naks`` accepts a NAK UNKNOWN_TERMINAL with a zero tag: set it on the
    terminal side only.
    """
    raw = bytes(data)
    header = decode_header(raw)
    if len(raw) != header.frame_size:
        raise header.error(
            Malformed,
            f"frame of {len(raw)} bytes, header says {header.frame_size}",
            raw,
            guess_ref_seq(header, raw),
        )
    tag_at = c.HEADER_SIZE + header.length
    crc_at = tag_at + c.TAG_SIZE
    if crc16(raw[:crc_at]) != int.from_bytes(raw[crc_at:], "big"):
        raise header.error(BadCrc, "crc does not match", raw, guess_ref_seq(header, raw))
    sent_tag = raw[tag_at:crc_at]
    if zero_tag_naks and sent_tag == c.ZERO_TAG and _is_unknown_terminal_nak(header, raw):
        return decode_payload(header, raw[c.HEADER_SIZE : tag_at], raw=raw)
    key = keys(header.terminal_id)
    if key is None:
        raise header.error(UnknownTerminal, f"terminal {header.terminal_id} is not registered", raw)
    if not hmac.compare_digest(sent_tag, tag(key, raw[:tag_at])):
        raise header.error(BadTag, "tag does not match", raw, guess_ref_seq(header, raw))
    return decode_payload(header, raw[c.HEADER_SIZE : tag_at], raw=raw)


def _is_unknown_terminal_nak(header: Header, raw: bytes) -> bool:
    return (
        header.frame_type == FrameType.NAK
        and header.length == 6
        and raw[c.HEADER_SIZE] == NakCode.UNKNOWN_TERMINAL
    )


def guess_ref_seq(header: Header, raw: bytes) -> int:
    """first_seq of a PRESSES frame, as far as its bytes reach (NAK ref_seq)."""
    if header.frame_type == FrameType.PRESSES and len(raw) >= c.HEADER_SIZE + 8:
        return int.from_bytes(raw[c.HEADER_SIZE + 4 : c.HEADER_SIZE + 8], "big")
    return 0


def decode_payload(header: Header, payload: bytes, *, raw: bytes = b"") -> Frame:
    """Parse an authenticated payload by its type (the last check of section 2)."""
    kind = header.frame_type
    if not isinstance(kind, FrameType):
        raise header.error(UnsupportedType, f"type 0x{kind:02x} is unknown", raw)
    parse = _PARSERS[kind]
    try:
        return parse(header.terminal_id, payload)
    except _PayloadError as exc:
        raise header.error(Malformed, f"{kind.name}: {exc}", raw, exc.ref_seq) from None
    except cs.ConstructError as exc:
        raise header.error(Malformed, f"{kind.name}: {exc}", raw) from exc


class _PayloadError(Exception):
    def __init__(self, reason: str, ref_seq: int = 0) -> None:
        super().__init__(reason)
        self.ref_seq = ref_seq


def _expect_size(payload: bytes, size: int) -> None:
    if len(payload) != size:
        raise _PayloadError(f"payload is {len(payload)} bytes, expected {size}")


def _parse_hello(terminal_id: int, payload: bytes) -> Hello:
    _expect_size(payload, 14)
    p = HELLO.parse(payload)
    return Hello(terminal_id, p.fw_version, p.boot_count, p.clock, p.flags, p.queued)


def _parse_presses(terminal_id: int, payload: bytes) -> Presses:
    if len(payload) < PRESSES_HEAD_SIZE:
        ref_seq = int.from_bytes(payload[4:8], "big") if len(payload) >= 8 else 0
        raise _PayloadError(f"payload is {len(payload)} bytes, under {PRESSES_HEAD_SIZE}", ref_seq)
    head = PRESSES_HEAD.parse(payload[:PRESSES_HEAD_SIZE])
    if not 1 <= head.count <= c.MAX_RECORDS:
        raise _PayloadError(f"count {head.count} outside 1..{c.MAX_RECORDS}", head.first_seq)
    expected = PRESSES_HEAD_SIZE + RECORD_SIZE * head.count
    if len(payload) != expected:
        raise _PayloadError(
            f"count {head.count} needs {expected} payload bytes, got {len(payload)}",
            head.first_seq,
        )
    if head.first_seq + head.count - 1 > 0xFFFFFFFF:
        raise _PayloadError("seq numbers run past 2^32-1", head.first_seq)
    # (seq,) + (ts, button, followup) made into a PressRecord, all in C: calling
    # the NamedTuple's Python __new__ per record was a third of decoding a frame.
    unpacked = RECORD_PACKING.iter_unpack(payload[PRESSES_HEAD_SIZE:])
    with_seq = map(operator.add, zip(itertools.count(head.first_seq)), unpacked)
    records = tuple(map(tuple.__new__, itertools.repeat(PressRecord), with_seq))
    return Presses(terminal_id, head.sent_at, head.first_seq, head.flags, records)


def _parse_heartbeat(terminal_id: int, payload: bytes) -> Heartbeat:
    _expect_size(payload, 12)
    p = HEARTBEAT.parse(payload)
    if p.battery_pct > 100 and p.battery_pct != c.MAINS_POWERED:
        raise _PayloadError(f"battery_pct {p.battery_pct} is neither 0..100 nor 255")
    return Heartbeat(terminal_id, p.clock, p.battery_pct, p.signal_dbm, p.queued, p.uptime_s)


def _parse_hourly(terminal_id: int, payload: bytes) -> Hourly:
    if len(payload) < HOURLY_HEAD_SIZE:
        raise _PayloadError(f"payload is {len(payload)} bytes, under {HOURLY_HEAD_SIZE}")
    head = HOURLY_HEAD.parse(payload[:HOURLY_HEAD_SIZE])
    if not 1 <= head.n_hours <= c.MAX_HOURS:
        raise _PayloadError(f"n_hours {head.n_hours} outside 1..{c.MAX_HOURS}")
    expected = HOURLY_HEAD_SIZE + HOUR_SIZE * head.n_hours
    if len(payload) != expected:
        raise _PayloadError(
            f"n_hours {head.n_hours} needs {expected} payload bytes, got {len(payload)}"
        )
    if head.hour_start % 3600:
        raise _PayloadError(f"hour_start {head.hour_start} is not a multiple of 3600")
    hours = HOUR_PACKING.iter_unpack(payload[HOURLY_HEAD_SIZE:])
    counts = tuple((b1, b2, b3, b4) for b1, b2, b3, b4 in hours)
    return Hourly(terminal_id, head.batch_seq, head.hour_start, counts)


def _parse_welcome(terminal_id: int, payload: bytes) -> Welcome:
    _expect_size(payload, 8)
    p = WELCOME.parse(payload)
    return Welcome(terminal_id, p.gateway_time, p.next_seq)


def _parse_ack(terminal_id: int, payload: bytes) -> Ack:
    _expect_size(payload, 10)
    p = ACK.parse(payload)
    return Ack(terminal_id, _type_of(p.acked_type), p.acked_seq, p.gateway_time)


_FRAME_TYPES: dict[int, FrameType] = {kind.value: kind for kind in FrameType}


def _type_of(value: int) -> FrameType | int:
    """The FrameType a type byte names, or the byte when it names none."""
    return _FRAME_TYPES.get(value, value)


def _parse_nak(terminal_id: int, payload: bytes) -> Nak:
    _expect_size(payload, 6)
    p = NAK.parse(payload)
    try:
        code = NakCode(p.code)
    except ValueError:
        raise _PayloadError(f"NAK code {p.code} is unknown") from None
    return Nak(terminal_id, code, p.ref_seq)


_PARSERS: dict[FrameType, Callable[[int, bytes], Frame]] = {
    FrameType.HELLO: _parse_hello,
    FrameType.PRESSES: _parse_presses,
    FrameType.HEARTBEAT: _parse_heartbeat,
    FrameType.HOURLY: _parse_hourly,
    FrameType.WELCOME: _parse_welcome,
    FrameType.ACK: _parse_ack,
    FrameType.NAK: _parse_nak,
}
