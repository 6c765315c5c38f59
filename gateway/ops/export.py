"""Export of the central store: one row per press (or per quarantined item), streamed."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import IO, Any

from gateway.rows import iso_utc
from gateway.stores import CentralStore, StoredPress, StoredReject

PRESS_FIELDS = (
    "terminal_id",
    "seq",
    "occurred_at",
    "local_time",
    "precision",
    "button",
    "followup",
    "count",
    "transport",
    "clock_corrected",
    "received_at",
    "misuse",
    "ui",
)
REJECT_FIELDS = (
    "received_at",
    "transport",
    "peer",
    "terminal_id",
    "seq",
    "reason",
    "detail",
    "raw_hex",
)
FORMATS = ("ndjson", "csv")


def press_record(press: StoredPress) -> dict[str, Any]:
    return {
        "terminal_id": press.terminal_id,
        "seq": press.seq,
        "occurred_at": iso_utc(press.occurred_at),
        "local_time": press.local_time,
        "precision": press.precision,
        "button": press.button,
        "followup": press.followup,
        "count": press.count,
        "transport": press.transport,
        "clock_corrected": press.clock_corrected,
        "received_at": iso_utc(press.received_at_ms / 1000),
        "misuse": press.misuse,
        "ui": press.ui,
    }


def reject_record(reject: StoredReject) -> dict[str, Any]:
    row = reject.row
    return {
        "received_at": iso_utc(row.received_at_ms / 1000),
        "transport": row.transport,
        "peer": row.peer,
        "terminal_id": row.terminal_id,
        "seq": row.seq,
        "reason": row.reason,
        "detail": row.detail,
        "raw_hex": row.raw.hex(),
    }


def parse_time(value: str) -> int:
    """Unix seconds from ISO 8601 (a date, or a time with Z or an offset) or a number."""
    if value.isdigit():
        return int(value)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


async def export(
    store: CentralStore,
    out: IO[str],
    *,
    fmt: str,
    since: int | None = None,
    until: int | None = None,
    rejected: bool = False,
    progress: Any = None,
) -> int:
    """Write every row in the range to ``out``; return how many."""
    rows: AsyncIterator[dict[str, Any]]
    fields: tuple[str, ...]
    if rejected:
        fields = REJECT_FIELDS
        rows = (reject_record(r) async for r in store.rejected(since, until))
    else:
        fields = PRESS_FIELDS
        rows = (press_record(p) async for p in store.presses(since, until))
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    count = 0
    async for row in rows:
        if writer is not None:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        else:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        count += 1
        if progress is not None:
            progress.update(1)
    return count


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value
