"""Frames of terminal-protocol-v1: typed dataclasses, and bytes to and from them.

Every frame (spec section 2)::

    0      2   3    4            8       10        10+N    18+N   20+N
    +------+---+----+------------+-------+---------+-------+------+
    | "SM" | 1 |type| terminal_id|   N   | payload |  tag  | crc  |
    +------+---+----+------------+-------+---------+-------+------+
    tag = first 8 bytes of HMAC-SHA256(key, bytes 0 .. 10+N)
    crc = CRC-16/CCITT-FALSE(bytes 0 .. 18+N)

A receiver checks magic, version, length, crc, terminal known, tag, then the
payload of the type; the first failing check decides the error. The type byte
is checked in the last step (it is part of "the payload of the type"), so a
frame must be genuine before its type is judged: see docs/protocol-notes.md.

Payload layouts are declared once below with ``construct`` (section 3).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import operator
import struct
from binascii import crc_hqx
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import construct as cs

from protocols import constants as c
from protocols.constants import FrameType, NakCode
from protocols.errors import (
    BadCrc,
    BadMagic,
    BadTag,
    DecodeError,
    EncodeError,
    FrameTooLong,
    Malformed,
    UnknownTerminal,
    UnsupportedType,
    UnsupportedVersion,
)
from protocols.layout import packing_of

KeyLookup = Callable[[int], bytes | None]
"""Returns a terminal's 16-byte key, or None when the terminal is not registered."""

HEADER = cs.Struct(
    "magic" / cs.Bytes(2),
    "version" / cs.Int8ub,
    "type" / cs.Int8ub,
    "terminal_id" / cs.Int32ub,
    "length" / cs.Int16ub,
).compile()

HELLO = cs.Struct(
    "fw_version" / cs.Int16ub,
    "boot_count" / cs.Int32ub,
    "clock" / cs.Int32ub,
    "flags" / cs.Int16ub,
    "queued" / cs.Int16ub,
).compile()

WELCOME = cs.Struct("gateway_time" / cs.Int32ub, "next_seq" / cs.Int32ub).compile()

PRESSES_HEAD = cs.Struct(
    "sent_at" / cs.Int32ub,
    "first_seq" / cs.Int32ub,
    "count" / cs.Int16ub,
    "flags" / cs.Int16ub,
).compile()
PRESSES_HEAD_SIZE = 12

RECORD = cs.Struct("ts" / cs.Int32ub, "button" / cs.Int8ub, "followup" / cs.Int8ub)
RECORD_SIZE = 6
RECORD_PACKING = packing_of(RECORD)

HEARTBEAT = cs.Struct(
    "clock" / cs.Int32ub,
    "battery_pct" / cs.Int8ub,
    "signal_dbm" / cs.Int8sb,
    "queued" / cs.Int16ub,
    "uptime_s" / cs.Int32ub,
).compile()

HOURLY_HEAD = cs.Struct(
    "batch_seq" / cs.Int32ub,
    "hour_start" / cs.Int32ub,
    "n_hours" / cs.Int8ub,
).compile()
HOURLY_HEAD_SIZE = 9
HOUR = cs.Struct(
    "button_1" / cs.Int16ub,
    "button_2" / cs.Int16ub,
    "button_3" / cs.Int16ub,
    "button_4" / cs.Int16ub,
)
HOUR_SIZE = 8
HOUR_PACKING = packing_of(HOUR)

ACK = cs.Struct(
    "acked_type" / cs.Int8ub,
    "reserved" / cs.Const(0, cs.Int8ub),
    "acked_seq" / cs.Int32ub,
    "gateway_time" / cs.Int32ub,
).compile()

NAK = cs.Struct(
    "code" / cs.Int8ub,
    "reserved" / cs.Const(0, cs.Int8ub),
    "ref_seq" / cs.Int32ub,
).compile()


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xor out)."""
    return crc_hqx(data, 0xFFFF)


def tag(key: bytes, data: bytes) -> bytes:
    """First 8 bytes of HMAC-SHA256(key, data)."""
    # hmac.new, not the one-shot hmac.digest: the one-shot releases the GIL for
    # any input, and with the outbox's SQLite threads busy, taking it back costs
    # many times the MAC of a frame; hmac.new keeps it for inputs under 2 KiB.
    return hmac.new(key, data, hashlib.sha256).digest()[: c.TAG_SIZE]


@dataclass(frozen=True, slots=True)
class Hello:
    terminal_id: int
    fw_version: int
    boot_count: int
    clock: int
    flags: int
    queued: int

    @property
    def clock_unsynced(self) -> bool:
        return bool(self.flags & c.CLOCK_UNSYNCED)


class PressRecord(NamedTuple):
    """One record of a PRESSES frame with its seq.

    A NamedTuple rather than a frozen dataclass: it is as immutable, and a frame
    of 680 records is built several times faster (this is the hot path).
    """

    seq: int
    ts: int
    button: int
    followup: int

    @property
    def problem(self) -> str | None:
        """Why the record must not be counted (spec section 5), or None."""
        if 1 <= self.button <= 4 and self.followup <= c.MAX_FOLLOWUP:
            return None
        if self.button not in c.BUTTONS:
            return f"button {self.button} outside 1..4"
        if self.followup > c.MAX_FOLLOWUP:
            return f"followup {self.followup} over {c.MAX_FOLLOWUP}"
        return None

    def to_bytes(self) -> bytes:
        return RECORD_PACKING.pack(self.ts, self.button, self.followup)


def all_countable(records: Sequence[PressRecord]) -> bool:
    """Whether no record has a :attr:`PressRecord.problem`; one pass, for the usual frame."""
    return all(1 <= b <= 4 and f <= c.MAX_FOLLOWUP for _, _, b, f in records)


@dataclass(frozen=True, slots=True)
class Presses:
    terminal_id: int
    sent_at: int
    first_seq: int
    flags: int
    records: tuple[PressRecord, ...]

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.records) - 1

    @property
    def clock_unsynced(self) -> bool:
        return bool(self.flags & c.CLOCK_UNSYNCED)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    terminal_id: int
    clock: int
    battery_pct: int
    signal_dbm: int
    queued: int
    uptime_s: int


@dataclass(frozen=True, slots=True)
class Hourly:
    terminal_id: int
    batch_seq: int
    hour_start: int
    counts: tuple[tuple[int, int, int, int], ...]

    @property
    def n_hours(self) -> int:
        return len(self.counts)


@dataclass(frozen=True, slots=True)
class Welcome:
    terminal_id: int
    gateway_time: int
    next_seq: int


@dataclass(frozen=True, slots=True)
class Ack:
    """``acked_type`` (the spec's name, which the vectors pin) is the type acknowledged:
    a :class:`FrameType`, or the byte itself when it names none (as in :class:`Header`)."""

    terminal_id: int
    acked_type: FrameType | int
    acked_seq: int
    gateway_time: int


@dataclass(frozen=True, slots=True)
class Nak:
    terminal_id: int
    code: NakCode
    ref_seq: int


Frame = Hello | Presses | Heartbeat | Hourly | Welcome | Ack | Nak

_TYPE_OF: dict[type[Any], FrameType] = {
    Hello: FrameType.HELLO,
    Presses: FrameType.PRESSES,
    Heartbeat: FrameType.HEARTBEAT,
    Hourly: FrameType.HOURLY,
    Welcome: FrameType.WELCOME,
    Ack: FrameType.ACK,
    Nak: FrameType.NAK,
}


def frame_type(frame: Frame) -> FrameType:
    return _TYPE_OF[type(frame)]


# ---------------------------------------------------------------- encoding


def _payload(frame: Frame) -> bytes:
    match frame:
        case Hello():
            return HELLO.build(
                {
                    "fw_version": frame.fw_version,
                    "boot_count": frame.boot_count,
                    "clock": frame.clock,
                    "flags": frame.flags,
                    "queued": frame.queued,
                }
            )
        case Presses():
            if not 1 <= frame.count <= c.MAX_RECORDS:
                raise EncodeError(f"PRESSES carries 1..{c.MAX_RECORDS} records, not {frame.count}")
            if any(r.seq != frame.first_seq + i for i, r in enumerate(frame.records)):
                raise EncodeError("record i of PRESSES must have seq first_seq + i")
            head = PRESSES_HEAD.build(
                {
                    "sent_at": frame.sent_at,
                    "first_seq": frame.first_seq,
                    "count": frame.count,
                    "flags": frame.flags,
                }
            )
            pack = RECORD_PACKING.pack
            return head + b"".join(pack(r.ts, r.button, r.followup) for r in frame.records)
        case Heartbeat():
            return HEARTBEAT.build(
                {
                    "clock": frame.clock,
                    "battery_pct": frame.battery_pct,
                    "signal_dbm": frame.signal_dbm,
                    "queued": frame.queued,
                    "uptime_s": frame.uptime_s,
                }
            )
        case Hourly():
            if not 1 <= frame.n_hours <= c.MAX_HOURS:
                raise EncodeError(f"HOURLY carries 1..{c.MAX_HOURS} hours, not {frame.n_hours}")
            head = HOURLY_HEAD.build(
                {
                    "batch_seq": frame.batch_seq,
                    "hour_start": frame.hour_start,
                    "n_hours": frame.n_hours,
                }
            )
            return head + b"".join(HOUR_PACKING.pack(*hour) for hour in frame.counts)
        case Welcome():
            return WELCOME.build({"gateway_time": frame.gateway_time, "next_seq": frame.next_seq})
        case Ack():
            return ACK.build(
                {
                    "acked_type": int(frame.acked_type),
                    "acked_seq": frame.acked_seq,
                    "gateway_time": frame.gateway_time,
                }
            )
        case Nak():
            return NAK.build({"code": int(frame.code), "ref_seq": frame.ref_seq})


def encode(frame: Frame, key: bytes | None) -> bytes:
    """Bytes of ``frame`` tagged with ``key``.

    ``key`` may be None only for a NAK UNKNOWN_TERMINAL, which carries a zero tag.
    """
    try:
        payload = _payload(frame)
        head = HEADER.build(
            {
                "magic": c.MAGIC,
                "version": c.VERSION,
                "type": frame_type(frame),
                "terminal_id": frame.terminal_id,
                "length": len(payload),
            }
        )
    except (cs.ConstructError, struct.error) as exc:
        raise EncodeError(f"cannot encode {type(frame).__name__}: {exc}") from exc
    if len(payload) > c.MAX_PAYLOAD:
        raise EncodeError(f"payload of {len(payload)} bytes exceeds {c.MAX_PAYLOAD}")
    body = head + payload
    if key is None:
        if not (isinstance(frame, Nak) and frame.code is NakCode.UNKNOWN_TERMINAL):
            raise EncodeError("only a NAK UNKNOWN_TERMINAL is sent without a key")
        body += c.ZERO_TAG
    else:
        body += tag(key, body)
    return body + crc16(body).to_bytes(2, "big")


# ---------------------------------------------------------------- decoding


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
