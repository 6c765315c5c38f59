"""Rows that move from the transports through the outbox to the central store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple


class PressRow(NamedTuple):
    """One counted press, placed in time (spec section 6).

    A NamedTuple whose field order is the outbox and store column order, so
    batches go to ``executemany`` as they are: this is the per-press hot path.
    """

    terminal_id: int
    seq: int
    occurred_at: int
    utc_offset_s: int
    """The experience point's UTC offset at occurred_at (local = UTC + offset)."""
    button: int
    followup: int
    clock_corrected: bool
    transport: str
    received_at_ms: int
    ui: str = ""
    """How a web smiley's press came (``qr``, ``link``, ``email``, ``digital``); empty else."""


class HourCountRow(NamedTuple):
    """The count of one button in one hour from an HOURLY batch (precision ``hour``).

    A later batch_seq replaces the count of an hour it covers; counts are never
    added across batches (spec, HOURLY).
    """

    terminal_id: int
    hour: int
    """The UTC start of the hour, unix seconds (the terminal's hour_start + 3600 x i)."""
    utc_offset_s: int
    button: int
    presses: int
    batch_seq: int
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
