"""The bare stdlib ``sqlite3`` baseline of the TCP benchmark: the outbox's work without the gateway.

The same rows, in the same order (frames interleaved across terminals), into a
table shaped like the outbox's ``press`` table with its durability (WAL,
``synchronous=FULL``): (a) one transaction per frame, the unit a terminal
waits for, and (b) ``batch_rows`` per transaction, about the best SQLite does.
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.fleet import TIMEZONE, PlannedFrame


@dataclass(frozen=True, slots=True)
class Baseline:
    """Medians of ``repeats`` runs; every run's rate is kept for the JSON."""

    rows: int
    repeats: int
    per_frame_rows_per_s: float
    per_frame_runs: tuple[float, ...]
    per_frame_commits: int
    batched_rows_per_s: float
    batched_runs: tuple[float, ...]
    batch_rows: int


_BASELINE_SCHEMA = """
CREATE TABLE press (
    id INTEGER PRIMARY KEY,
    terminal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    utc_offset_s INTEGER NOT NULL,
    button INTEGER NOT NULL,
    followup INTEGER NOT NULL,
    clock_corrected INTEGER NOT NULL,
    transport TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    UNIQUE (terminal_id, seq)
)
"""
_BASELINE_INSERT = (
    "INSERT OR IGNORE INTO press (terminal_id, seq, occurred_at, utc_offset_s, button, followup,"
    " clock_corrected, transport, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
Row = tuple[int, int, int, str, int, int, int, str, int]


def baseline_frames(plans: dict[int, tuple[PlannedFrame, ...]]) -> list[list[Row]]:
    """The gateway's rows, one list per frame, frames interleaved across terminals."""
    zone = ZoneInfo(TIMEZONE)
    stamps = {r.ts for frames in plans.values() for f in frames for r in f.records}
    local = {ts: datetime.fromtimestamp(ts, zone).isoformat() for ts in stamps}
    received_ms = time.time_ns() // 1_000_000
    depth = max(len(frames) for frames in plans.values())
    result = []
    for index in range(depth):
        for terminal_id, frames in plans.items():
            if index < len(frames):
                result.append(
                    [
                        (
                            terminal_id,
                            r.seq,
                            r.ts,
                            local[r.ts],
                            r.button,
                            r.followup,
                            0,
                            "tcp",
                            received_ms,
                        )
                        for r in frames[index].records
                    ]
                )
    return result


@contextlib.contextmanager
def baseline_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A fresh database with the outbox's durability settings; removed afterwards."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_BASELINE_SCHEMA)
        yield db
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def timed_transactions(path: Path, batches: Sequence[Sequence[Row]]) -> float:
    """Rows per second inserting ``batches``, one transaction (one commit) each."""
    with baseline_db(path) as db:
        start = time.perf_counter()
        for batch in batches:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_BASELINE_INSERT, batch)
            db.execute("COMMIT")
        elapsed = time.perf_counter() - start
    return sum(len(b) for b in batches) / elapsed


def run_baseline(
    directory: Path, frames: list[list[Row]], batch_rows: int, repeats: int
) -> Baseline:
    """(a) one transaction per frame and (b) ``batch_rows`` per transaction, alternated."""
    rows = [row for frame in frames for row in frame]
    batches = [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]
    per_frame: list[float] = []
    batched: list[float] = []
    for _ in range(repeats):
        per_frame.append(timed_transactions(directory / "baseline-a.db", frames))
        batched.append(timed_transactions(directory / "baseline-b.db", batches))
    return Baseline(
        rows=len(rows),
        repeats=repeats,
        per_frame_rows_per_s=statistics.median(per_frame),
        per_frame_runs=tuple(per_frame),
        per_frame_commits=len(frames),
        batched_rows_per_s=statistics.median(batched),
        batched_runs=tuple(batched),
        batch_rows=batch_rows,
    )
