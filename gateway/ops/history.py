"""The console's history: a small ring of per-minute and per-hour buckets that survives a restart.

``history.db`` in the data directory (not the outbox: nothing here is a press,
so ``synchronous=NORMAL`` is enough and a lost last minute costs nothing).
Each series keeps at most :data:`MINUTE_BUCKETS` minute buckets and
:data:`HOUR_BUCKETS` hour buckets, and there are at most :data:`MAX_SERIES`
series, so the file stops growing however long the gateway runs: every write
deletes the buckets that fell out of its window, and SQLite reuses their pages.

Two kinds of series: a *count* (presses, refusals) adds what happened since the
last sample to its bucket; a *level* (outbox depth, forward lag, modem signal)
keeps the last value sampled in its bucket. :class:`HistorySampler` feeds both
from the counters and views the gateway already keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import structlog

from gateway.intake.outbox import Backlog
from gateway.ops.views import Observed
from gateway.sqlitedb import migrate

log = structlog.get_logger("gateway.history")

HISTORY_FILE = "history.db"
MINUTE = 60
HOUR = 3600
MINUTE_BUCKETS = 12 * 60  # twelve hours of minutes: outbox depth and forward lag
HOUR_BUCKETS = 14 * 24  # fourteen days of hours: presses, refusals, modem signal
STEPS = {MINUTE: MINUTE_BUCKETS, HOUR: HOUR_BUCKETS}
MAX_SERIES = 64  # transports, refusal reasons and levels: a few dozen at most
WAL_LIMIT_BYTES = 1 << 20  # the write-ahead log is cut back to this after a checkpoint

_SCHEMA = """
CREATE TABLE bucket (
    series TEXT NOT NULL,
    step INTEGER NOT NULL,
    start INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series, step, start)
) WITHOUT ROWID;
"""
_MIGRATIONS = (_SCHEMA,)


@dataclass(frozen=True, slots=True)
class Point:
    at: int
    """Start of the bucket, Unix seconds."""
    value: float


class HistoryRing:
    """The bounded ring in ``history.db``; open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, db: aiosqlite.Connection, series: set[str]) -> None:
        self._db = db
        self._series = series
        self._refused: set[str] = set()

    @classmethod
    async def open(cls, path: Path) -> HistoryRing:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None, timeout=5.0)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")  # history, not presses
            await db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            await migrate(db, _MIGRATIONS, "history")
            async with db.execute("SELECT DISTINCT series FROM bucket") as cursor:
                series = {str(row[0]) for row in await cursor.fetchall()}
        except BaseException:
            await db.close()
            raise
        return cls(db, series)

    async def close(self) -> None:
        await self._db.close()

    async def record(
        self, at: float, counts: Mapping[str, float], levels: Mapping[str, float]
    ) -> None:
        """Add ``counts`` to, and set ``levels`` in, the buckets holding ``at``; then trim."""
        counts = {s: v for s, v in counts.items() if self._admit(s)}
        levels = {s: v for s, v in levels.items() if self._admit(s)}
        rows_added = [(s, step, _start(at, step), v) for s, v in counts.items() for step in STEPS]
        rows_set = [(s, step, _start(at, step), v) for s, v in levels.items() for step in STEPS]
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.executemany(
                "INSERT INTO bucket (series, step, start, value) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (series, step, start) DO UPDATE SET value = value + excluded.value",
                rows_added,
            )
            await db.executemany(
                "INSERT OR REPLACE INTO bucket (series, step, start, value) VALUES (?, ?, ?, ?)",
                rows_set,
            )
            for step, keep in STEPS.items():  # the ring: what fell out of the window goes
                await db.execute(
                    "DELETE FROM bucket WHERE step = ? AND start <= ?",
                    (step, _start(at, step) - keep * step),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.rollback()
            raise

    async def points(self, prefix: str, step: int, since: float) -> dict[str, list[Point]]:
        """Every series named ``prefix`` + something, its buckets of ``step`` from ``since`` on."""
        found: dict[str, list[Point]] = {}
        async with self._db.execute(
            "SELECT series, start, value FROM bucket WHERE step = ? AND start >= ?"
            " AND substr(series, 1, ?) = ? ORDER BY series, start",
            (step, _start(since, step), len(prefix), prefix),
        ) as cursor:
            for series, start, value in await cursor.fetchall():
                found.setdefault(str(series)[len(prefix) :], []).append(
                    Point(int(start), float(value))
                )
        return found

    async def size(self) -> tuple[int, int]:
        """(buckets held, pages of the file): what the bound is about."""
        async with self._db.execute("SELECT count(*) FROM bucket") as cursor:
            row = await cursor.fetchone()
        async with self._db.execute("PRAGMA page_count") as cursor:
            pages = await cursor.fetchone()
        return (int(row[0]) if row else 0), (int(pages[0]) if pages else 0)

    def _admit(self, series: str) -> bool:
        if series in self._series:
            return True
        if len(self._series) < MAX_SERIES:
            self._series.add(series)
            return True
        if series not in self._refused:  # said once per series: the bound, not a fault
            self._refused.add(series)
            log.warning("history_series_refused", series=series, max_series=MAX_SERIES)
        return False


def _start(at: float, step: int) -> int:
    return int(at) // step * step


class HistorySampler:
    """Samples what the gateway counts into the ring every ``interval_s`` (and once at close).

    Counters are totals since the process started, so the first sample of a
    run takes them whole and each next one what they grew by.
    """

    def __init__(
        self,
        ring: HistoryRing,
        observed: Observed,
        *,
        interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.ring = ring
        self._observed = observed
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self.samples = 0

    async def run(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self._interval_s)

    async def sample_once(self) -> None:
        seen = self._observed
        now = self._clock()
        totals: dict[str, float] = {}
        for transport, n in seen.counters.by_transport.items():
            totals[f"presses:{transport}"] = n
        for reason, n in seen.counters.quarantined.items():
            totals[f"refusals:{reason}"] = n
        counts = {s: n - self._last.get(s, 0) for s, n in totals.items()}
        levels: dict[str, float] = {}
        backlog: Backlog | None = None
        with contextlib.suppress(sqlite3.Error, ValueError):
            backlog = await seen.outbox.backlog()
        if backlog is not None:
            levels["outbox:depth"] = backlog.presses + backlog.rejects + backlog.hours
            oldest = backlog.oldest_received_at_ms
            levels["outbox:lag_s"] = max(0.0, now - oldest / 1000) if oldest else 0.0
        if seen.modem is not None and seen.modem.signal_dbm is not None:
            levels["modem:signal_dbm"] = seen.modem.signal_dbm
        try:
            await self.ring.record(now, {s: n for s, n in counts.items() if n}, levels)
        except sqlite3.Error as exc:  # the console loses a point; the counts are kept for next
            log.error("history_write_failed", error=str(exc))
            return
        self._last = totals
        self.samples += 1
