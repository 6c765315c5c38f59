"""Placing presses in time (spec section 6)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from protocols.frames import Presses

FUTURE_TOLERANCE_S = 300


def clock_offset(frame: Presses, received_at: int) -> int | None:
    """Seconds to add to each record's ts, or None when the frame is taken as sent.

    A frame is corrected as a whole: with CLOCK_UNSYNCED, or when any record lies
    more than 300 s after the frame was received. One future record shows the
    terminal clock is wrong, and its neighbours came from the same clock.
    """
    in_future = any(r.ts - received_at > FUTURE_TOLERANCE_S for r in frame.records)
    if frame.clock_unsynced or in_future:
        return received_at - frame.sent_at
    return None


def browser_clock_offset(sent_at: float, times: Sequence[float], received_at: float) -> int | None:
    """Seconds to add to each press of a browser's request, or None when taken as sent.

    A browser has no CLOCK_UNSYNCED flag: its clock counts as unsynced when
    ``sent_at`` lies more than 300 s from the gateway's clock, either way (the
    request took far less than that to arrive). Otherwise, as for a terminal,
    one press more than 300 s in the future corrects the whole request.
    """
    off = abs(received_at - sent_at) > FUTURE_TOLERANCE_S
    if off or any(t - received_at > FUTURE_TOLERANCE_S for t in times):
        return round(received_at - sent_at)
    return None


def local_time(utc_seconds: int, zone: ZoneInfo) -> str:
    """Wall-clock time at the experience point, ISO 8601 with its UTC offset."""
    return datetime.fromtimestamp(utc_seconds, zone).isoformat()


class UtcOffsets:
    """UTC offsets of one zone, looked up once per quarter hour.

    Presses of a frame lie close together, so nearly every call reuses the last
    offset; a quarter hour whose two ends differ (a DST change inside it) is
    looked up press by press.
    """

    __slots__ = ("_bucket", "_offset", "_zone")

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._bucket: int | None = None
        self._offset = 0

    def __call__(self, utc_seconds: int) -> int:
        """Seconds to add to UTC for the zone's wall clock at that moment."""
        bucket = utc_seconds // _BUCKET_S
        if bucket == self._bucket:
            return self._offset
        start = _offset_at(bucket * _BUCKET_S, self._zone)
        if start != _offset_at(bucket * _BUCKET_S + _BUCKET_S - 1, self._zone):
            return _offset_at(utc_seconds, self._zone)
        self._bucket, self._offset = bucket, start
        return start


_BUCKET_S = 900


def _offset_at(utc_seconds: int, zone: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(utc_seconds, zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def format_local(utc_seconds: int, offset_s: int) -> str:
    """ISO 8601 wall-clock time with its UTC offset, as ``datetime.isoformat`` writes it."""
    t = time.gmtime(utc_seconds + offset_s)
    sign = "-" if offset_s < 0 else "+"
    hours, rest = divmod(abs(offset_s), 3600)
    minutes, seconds = divmod(rest, 60)
    zone = f"{sign}{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}{zone}"
    )
