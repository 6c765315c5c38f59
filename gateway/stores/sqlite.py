"""The embedded central store: one SQLite file, WAL, synchronous FULL.

The outbox deletes a row once this store has committed it, so this store must
be as durable as the outbox: hence FULL here as well.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from gateway.errors import StoreError
from gateway.registry.terminals import Registry
from gateway.rows import HourCountRow, PressRow, RejectRow
from gateway.sqlitedb import execute_rows, migrate, statements
from gateway.stores.base import (
    ImportSummary,
    StoredPress,
    StoredReject,
    registry_from_rows,
    registry_rows,
    reject_values,
)
from gateway.stores.misuse import reflag
from gateway.stores.schema import REGISTRY_COLUMNS
from gateway.stores.sqlite_schema import MIGRATIONS

log = structlog.get_logger("gateway.store")

_INSERT_PRESS = (  # columns in PressRow order, so rows go in as they are
    "INSERT OR IGNORE INTO press (terminal_id, seq, occurred_at, utc_offset_s, button, followup,"
    " clock_corrected, transport, received_at_ms, ui) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A later batch replaces an hour's count; the same or an older batch changes nothing.
_UPSERT_HOUR = (
    "INSERT INTO hourly (terminal_id, hour, utc_offset_s, button, count, batch_seq, transport,"
    " received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (terminal_id, hour, button)"
    " DO UPDATE SET count = excluded.count, batch_seq = excluded.batch_seq,"
    " utc_offset_s = excluded.utc_offset_s, received_at_ms = excluded.received_at_ms"
    " WHERE excluded.batch_seq > hourly.batch_seq"
)
_INSERT_REJECT = (
    "INSERT OR IGNORE INTO rejected (uid, received_at_ms, transport, peer, terminal_id, seq,"
    " reason, detail, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_STREAM_CHUNK = 2000
_ANALYZE_FIRST_AT = 1000  # presses written before the first statistics
_WALK_CHUNK = 256
# The terminal's misuse interval, and the last counted press before a time.
# The presses each write actually inserted, noted by a trigger on this
# connection only (temporary, so other processes writing the file see none).
_FRESH = """
CREATE TEMP TABLE IF NOT EXISTS fresh_press (terminal_id INTEGER, occurred_at INTEGER);
CREATE TEMP TRIGGER IF NOT EXISTS fresh_press_noted AFTER INSERT ON main.press BEGIN
    INSERT INTO fresh_press VALUES (NEW.terminal_id, NEW.occurred_at);
END;
"""
_MISUSE_START = (
    "SELECT s.misuse_interval_s, (SELECT max(occurred_at) FROM press"
    " WHERE terminal_id = ? AND occurred_at < ? AND misuse = 0)"
    " FROM terminal AS t JOIN survey AS s ON s.id = t.survey WHERE t.id = ?"
)
_WALK = (
    "SELECT seq, occurred_at, misuse FROM press WHERE terminal_id = ? AND occurred_at >= ?"
    " ORDER BY occurred_at, seq"
)
# The terminals whose new presses (fresh_press) may change misuse flags, with
# the times of their first and last new press. Any other terminal's new presses
# are rightly stored as counted: its survey has no misuse interval, or no two
# of them are closer than the interval and no press stored before them is
# later than (or within the interval before) the first, so the greedy walk
# would count each one and change no earlier flag. That is the usual batch:
# presses arrive in order, seconds to minutes apart. The new presses are in
# press already, hence the count: more presses than new ones in that range
# means an earlier one is there.
_NEEDS_WALK = """
SELECT f.terminal_id, f.first, f.last
FROM (
    SELECT terminal_id, min(occurred_at) AS first, max(occurred_at) AS last,
           count(*) AS fresh, min(gap) AS closest
    FROM (
        SELECT terminal_id, occurred_at,
               occurred_at - lag(occurred_at) OVER (PARTITION BY terminal_id
                                                    ORDER BY occurred_at) AS gap
        FROM fresh_press
    )
    GROUP BY terminal_id
) AS f
JOIN terminal AS t ON t.id = f.terminal_id
JOIN survey AS s ON s.id = t.survey
WHERE s.misuse_interval_s > 0
  AND (f.closest < s.misuse_interval_s
       OR (SELECT count(*) FROM press AS p
           WHERE p.terminal_id = f.terminal_id
             AND p.occurred_at > f.first - s.misuse_interval_s) > f.fresh)
"""


class SqliteStore:
    """A :class:`~gateway.stores.base.CentralStore` in one SQLite file."""

    def __init__(self, db: aiosqlite.Connection, analyzed_presses: int = 0) -> None:
        self._db = db
        self._analyzed_presses = analyzed_presses  # the press count the statistics describe
        self._written_since_analyze = 0

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=10000")
            await migrate(db, MIGRATIONS, "store")
            for statement in statements(_FRESH):
                await db.execute(statement)
            analyzed = await _analyzed_presses(db)
        except BaseException:
            await db.close()
            raise
        return cls(db, analyzed)

    async def close(self) -> None:
        await self._db.close()

    async def write(
        self,
        presses: Sequence[PressRow],
        rejects: Sequence[StoredReject],
        hours: Sequence[HourCountRow] = (),
    ) -> None:
        db = self._db
        try:
            await db.execute("BEGIN IMMEDIATE")
            if presses:
                self._written_since_analyze += await execute_rows(db, _INSERT_PRESS, presses)
                await self._reflag()
            if hours:
                await db.executemany(_UPSERT_HOUR, hours)
            if rejects:
                await db.executemany(_INSERT_REJECT, [reject_values(r) for r in rejects])
            await db.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:
            await _rollback(db)
            raise StoreError(f"sqlite store: {exc}") from exc
        if self._written_since_analyze >= max(self._analyzed_presses, _ANALYZE_FIRST_AT):
            await self._analyze()

    async def _analyze(self) -> None:
        """Statistics for the query planner, each time the press table has doubled.

        Without them SQLite plans a feedback page by terminal and sorts every
        press of the selection (612 ms for a page deep into a month at 10M
        presses, 155 ms with them); an estimate (analysis_limit) is not enough,
        as it takes all its sample rows from a few terminals. At 10M presses it
        takes about 2 s, once per doubling.
        """
        try:
            await self._db.execute("ANALYZE press")
            self._analyzed_presses = await _analyzed_presses(self._db)
        except sqlite3.Error as exc:  # statistics are an optimisation: the write stands
            log.warning("store_analyze_failed", error=str(exc))
        self._written_since_analyze = 0

    async def _reflag(self) -> None:
        """Bring the misuse flags up to date after the presses just inserted.

        Only presses new to the store count (fresh_press): a resend of an old
        press is ignored by the insert and must not make the walk start at its
        old time, which would read the terminal's history at every batch.
        """
        db = self._db
        async with db.execute(_NEEDS_WALK) as cursor:
            spans = list(await cursor.fetchall())
        await db.execute("DELETE FROM fresh_press")
        for terminal_id, first, latest in spans:
            async with db.execute(_MISUSE_START, (terminal_id, first, terminal_id)) as cursor:
                row = await cursor.fetchone()
            if row is None or not row[0]:
                continue  # unknown terminal or no misuse interval
            interval, last_counted = row
            changes: list[tuple[int, int, bool]] = []
            async with db.execute(_WALK, (terminal_id, first)) as cursor:
                while chunk := await cursor.fetchmany(_WALK_CHUNK):
                    walk = reflag(
                        ((seq, at, bool(flag)) for seq, at, flag in chunk),
                        last_counted=last_counted,
                        interval_s=interval,
                        settled_after=latest,
                    )
                    changes += walk.changes
                    last_counted = walk.last_counted
                    if walk.settled:
                        break
            await db.executemany(
                "UPDATE press SET misuse = ? WHERE terminal_id = ? AND seq = ?",
                [(int(flag), terminal_id, seq) for seq, _, flag in changes],
            )

    async def import_registry(self, registry: Registry) -> ImportSummary:
        rows = registry_rows(registry)
        added = changed = unchanged = 0
        db = self._db
        try:
            await db.execute("BEGIN IMMEDIATE")
            for table, entries in rows.items():
                async with db.execute(f"SELECT * FROM {table}") as cursor:  # noqa: S608
                    existing = {row[0]: tuple(row) for row in await cursor.fetchall()}
                for entry in entries:
                    before = existing.get(entry[0])
                    if before == entry:
                        unchanged += 1
                        continue
                    added += before is None
                    changed += before is not None
                    marks = ", ".join("?" * len(entry))
                    await db.execute(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", entry)  # noqa: S608
            await db.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:
            await _rollback(db)
            raise StoreError(f"sqlite store: {exc}") from exc
        return ImportSummary(added, changed, unchanged)

    async def load_registry(self) -> Registry:
        rows: dict[str, list[Sequence[Any]]] = {}
        try:
            for table, columns in REGISTRY_COLUMNS.items():
                query = f"SELECT {', '.join(columns)} FROM {table} ORDER BY id"  # noqa: S608
                async with self._db.execute(query) as cursor:
                    rows[table] = list(await cursor.fetchall())
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"sqlite store: {exc}") from exc
        return registry_from_rows(rows)

    async def presses(self, since: int | None, until: int | None) -> AsyncIterator[StoredPress]:
        # Hour counts come as one row per button and hour, seq being the batch_seq.
        query = (
            "SELECT terminal_id, seq, occurred_at, utc_offset_s, precision, button, followup,"
            " count, transport, clock_corrected, received_at_ms, misuse, ui FROM press"
            " WHERE occurred_at >= ?1 AND occurred_at < ?2"
            " UNION ALL SELECT terminal_id, batch_seq, hour, utc_offset_s, 'hour', button, 0,"
            " count, transport, 0, received_at_ms, 0, '' FROM hourly"
            " WHERE hour >= ?1 AND hour < ?2 AND count > 0"
            " ORDER BY 3, 1, 2, 6"
        )
        async for row in self._stream(query, _bounds(since, until)):
            values = list(row)
            values[9] = bool(values[9])
            values[11] = bool(values[11])
            yield StoredPress(*values)

    async def rejected(self, since: int | None, until: int | None) -> AsyncIterator[StoredReject]:
        low, high = _bounds(since, until)
        query = (
            "SELECT uid, received_at_ms, transport, peer, terminal_id, seq, reason, detail, raw"
            " FROM rejected WHERE received_at_ms >= ? AND received_at_ms < ?"
            " ORDER BY received_at_ms, uid"
        )
        async for row in self._stream(query, (low * 1000, high * 1000)):
            yield StoredReject(row[0], RejectRow(*row[1:]))

    async def _stream(self, query: str, params: tuple[int, int]) -> AsyncIterator[sqlite3.Row]:
        async with self._db.execute(query, params) as cursor:
            while rows := await cursor.fetchmany(_STREAM_CHUNK):
                for row in rows:
                    yield row


_FOREVER_S = 2**40  # about 35,000 years either way, and still an INTEGER in milliseconds


def _bounds(since: int | None, until: int | None) -> tuple[int, int]:
    return (since if since is not None else -_FOREVER_S, until if until is not None else _FOREVER_S)


async def _rollback(db: aiosqlite.Connection) -> None:
    try:
        await db.rollback()
    except (sqlite3.Error, ValueError):
        return


async def _analyzed_presses(db: aiosqlite.Connection) -> int:
    """How many presses the planner's statistics describe (0 without statistics)."""
    try:
        async with db.execute(
            "SELECT stat FROM sqlite_stat1 WHERE tbl = 'press' AND idx = 'press'"
        ) as cursor:
            row = await cursor.fetchone()
    except sqlite3.OperationalError:  # no sqlite_stat1: never analyzed
        return 0
    return int(str(row[0]).split()[0]) if row else 0
