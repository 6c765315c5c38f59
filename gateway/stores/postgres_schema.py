"""The PostgreSQL store's schema: its migrations (``pg_schema/NNNN_name.sql``) and partitions.

Migrations are applied when the store opens, each in its own transaction under
an advisory lock, so several gateways starting at once apply each migration
exactly once. ``press`` is partitioned by month; a month gets its partition
from the first batch that writes into it (:func:`ensure_partitions`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta
from importlib import resources
from typing import TypeAlias

import asyncpg
import asyncpg.pool

from gateway.errors import SchemaError
from gateway.rows import PressRow

# Advisory locks: one namespace for this application ("SMLY"), one key per use.
LOCK_NAMESPACE = 0x534D4C59
LOCK_MIGRATIONS = 1
LOCK_PARTITIONS = 2
LOCK_REGISTRY = 3
# 4 was the one lock every write took in turn, up to schema version 3: not reused.

_MIGRATION_TIMEOUT_S = 3600.0  # a migration (or waiting for another's) may take long
_SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

# Partitions are made for these years; anything outside lands in press_default.
_FIRST_YEAR, _LAST_YEAR = 1, 9998
_EPOCH_DAY = date(1970, 1, 1)

# asyncpg's classes are generic only in asyncpg-stubs, hence the quotes.
_Connection: TypeAlias = (
    "asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"
)


# --- migrations -----------------------------------------------------------------

_MIGRATION_FILE = re.compile(r"(\d{4})_(\w+)\.sql")


def migrations() -> list[tuple[int, str, str]]:
    """The schema migrations shipped with the gateway: (version, name, SQL), in order."""
    found = []
    for entry in (resources.files("gateway.stores") / "pg_schema").iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _, _ in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations are not numbered 1..n: {[v for v, _, _ in found]}")
    return found


async def migrate(conn: _Connection) -> int:
    """Bring the schema up to date; return the version it is at.

    Each migration runs in its own transaction that first takes an advisory
    lock and re-reads the version, so gateways starting together apply it once:
    the others wait on the lock and then find it applied. The check before any
    lock lets an up-to-date store open without writing (on a read replica too).
    """
    steps = migrations()
    latest = steps[-1][0]
    current = await _schema_version(conn)
    if current > latest:
        raise SchemaError(f"store schema version {current} is newer than this gateway ({latest})")
    while current < latest:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                LOCK_NAMESPACE,
                LOCK_MIGRATIONS,
                timeout=_MIGRATION_TIMEOUT_S,
            )
            await conn.execute(_SCHEMA_VERSION_TABLE)
            current = await _schema_version(conn)
            if current > latest:
                raise SchemaError(
                    f"store schema version {current} is newer than this gateway ({latest})"
                )
            if current == latest:  # another gateway migrated while we waited
                break
            version, name, sql = steps[current]
            await conn.execute(sql, timeout=_MIGRATION_TIMEOUT_S)
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name
            )
            current = version
    return current


async def _schema_version(conn: _Connection) -> int:
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
    return int(version)


# --- partitions -----------------------------------------------------------------


def partition_name(year: int, month: int) -> str:
    return f"press_y{year:04d}m{month:02d}"


def months_of(presses: Sequence[PressRow]) -> set[tuple[int, int]]:
    """The (year, month) in UTC of every press, for the years that get partitions."""
    months = set()
    for day in {p[2] // 86400 for p in presses}:
        try:
            moment = _EPOCH_DAY + timedelta(days=day)
        except OverflowError:
            continue
        if _FIRST_YEAR <= moment.year <= _LAST_YEAR:
            months.add((moment.year, moment.month))
    return months


async def ensure_partitions(conn: _Connection, months: set[tuple[int, int]]) -> None:
    """Give each month its partition of press, in the caller's transaction.

    The writer calls it in a transaction of its own, before the write, so it
    holds nothing a writer waits for while it waits for the advisory lock or
    for ``press_default``. A new partition is created as a table, filled with
    any rows of its month that fell into press_default, and then attached:
    attaching needs SHARE UPDATE EXCLUSIVE on press, so writers of other
    months go on meanwhile, and ACCESS EXCLUSIVE on press_default, which every
    write transaction takes in ACCESS SHARE mode first (postgres.py), so it
    waits for the writes under way and new ones wait behind it holding
    nothing. A month that once had no partition gets one without losing rows.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NAMESPACE, LOCK_PARTITIONS)
    existing = {
        row[0]
        for row in await conn.fetch(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'press'::regclass"
        )
    }
    for year, month in sorted(months):
        name = partition_name(year, month)
        if name in existing:
            continue
        low = f"'{year:04d}-{month:02d}-01 00:00:00+00'"
        next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
        high = f"'{next_year:04d}-{next_month:02d}-01 00:00:00+00'"
        # Names and bounds are made from integers above: nothing to inject.
        create = f"CREATE TABLE {name} (LIKE press INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        move = (
            f"WITH moved AS (DELETE FROM press_default WHERE occurred_at >= {low}"  # noqa: S608
            f" AND occurred_at < {high} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )
        attach = f"ALTER TABLE press ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
        await conn.execute(f"{create}; {move}; {attach}")
