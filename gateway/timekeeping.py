"""Placing presses in time (spec section 6)."""

from __future__ import annotations

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


def local_time(utc_seconds: int, zone: ZoneInfo) -> str:
    """Wall-clock time at the experience point, ISO 8601 with its UTC offset."""
    return datetime.fromtimestamp(utc_seconds, zone).isoformat()
