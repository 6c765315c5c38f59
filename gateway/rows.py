"""Rows that move from the transports through the outbox to the central store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class PressRow:
    """One counted press, placed in time (spec section 6)."""

    terminal_id: int
    seq: int
    occurred_at: int
    local_time: str
    button: int
    followup: int
    clock_corrected: bool
    transport: str
    received_at_ms: int


@dataclass(frozen=True, slots=True)
class RejectRow:
    """Anything a terminal sent that was not counted, kept with the reason (quarantine)."""

    received_at_ms: int
    transport: str
    peer: str
    terminal_id: int | None
    seq: int | None
    reason: str
    detail: str
    raw: bytes


def iso_utc(seconds: float) -> str:
    """ISO 8601 UTC with a Z, to the second or to the millisecond as given."""
    moment = datetime.fromtimestamp(seconds, UTC)
    spec = "seconds" if float(seconds).is_integer() else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")
