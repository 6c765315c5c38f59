"""The frames of terminal-protocol-v1 as typed values (spec section 3), one class a type.

Pure data: the bytes of a frame are made by :mod:`protocols.frame_encoder` and
read by :mod:`protocols.frame_decoder`, with the layouts of :mod:`protocols.layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from protocols import constants as c
from protocols.constants import FrameType, NakCode
from protocols.layout import RECORD_PACKING


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
    a :class:`FrameType`, or the byte itself when it names none (as in
    :class:`~protocols.frame_decoder.Header`)."""

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
