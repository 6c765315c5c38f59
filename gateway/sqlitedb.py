"""SQLite helpers for the outbox, the central SQLite store and the fleet status.

:func:`execute_rows` inserts many rows a statement; :func:`migrate` (and
:func:`migrate_sync`) is the one ``PRAGMA user_version`` migration runner.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Generator, Sequence
from typing import Any, TypeAlias

import aiosqlite

from gateway.errors import SchemaError

# SQLite binds at most 999 variables a statement before 3.32.0, 32766 since.
_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_MAX_ROWS_PER_STATEMENT = 1000


async def execute_rows(db: aiosqlite.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    """Run ``sql``, a one-row ``... VALUES (?, ...) ...``, for every row; return the rows changed.

    Many rows a statement, in order: executemany steps SQLite once per row and
    gives up and takes back the GIL at each step, and with the event loop and
    the forwarder's threads wanting it, a press cost several times its insert.
    """
    if not rows:
        return 0
    width = len(rows[0])
    one_row = "(" + ", ".join(["?"] * width) + ")"
    head, found, tail = sql.partition(one_row)
    assert found, f"{sql!r} has no {one_row}"
    values = list(itertools.chain.from_iterable(rows))
    changed = start = 0
    for size, count in _statement_sizes(len(rows), width):
        statement = head + ", ".join([one_row] * size) + tail
        step = size * width
        chunks = [values[start + i * step : start + (i + 1) * step] for i in range(count)]
        start += count * step
        cursor = await db.executemany(statement, chunks)
        changed += max(cursor.rowcount, 0)
    return changed


def _statement_sizes(rows: int, width: int) -> list[tuple[int, int]]:
    """(rows a statement, statements) covering ``rows``: large, then 100 rows, then the rest.

    Few distinct sizes, so SQLite's statement cache keeps them all.
    """
    sizes = []
    for size in (min(_MAX_ROWS_PER_STATEMENT, _MAX_VARIABLES // width), 100):
        count, rows = divmod(rows, size)
        if count:
            sizes.append((size, count))
    if rows:
        sizes.append((rows, 1))
    return sizes


# --- schema migrations ------------------------------------------------------------

Migrations: TypeAlias = Sequence[str]
"""SQL scripts in order: the n-th (from 1) takes a database from version n - 1 to n."""


def statements(script: str) -> list[str]:
    """The statements of ``script``, a trigger's body (with its own semicolons) kept whole."""
    found, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                found.append(pending)
            pending = ""
    return found


def migration_plan(
    migrations: Migrations, what: str, *, when_new: Sequence[str] = ()
) -> Generator[str, list[Any], int]:
    """The statements that bring a database's ``PRAGMA user_version`` up to date, sans I/O.

    A generator: it yields each statement and is sent the rows it returned
    (:func:`migrate` and :func:`migrate_sync` run it). Each migration is
    applied in a transaction of its own that first re-reads the version, so
    processes opening the database together apply it once; ``when_new``
    statements (pragmas a new file needs before its first table) run first on
    a database at version 0. A database newer than ``migrations`` is refused
    with SchemaError. Returns the version reached.
    """
    latest = len(migrations)
    version = _checked_version((yield "PRAGMA user_version"), what, latest)
    if version == latest:
        return version
    if version == 0:
        for statement in when_new:
            yield statement
    while version < latest:
        yield "BEGIN IMMEDIATE"
        version = _checked_version((yield "PRAGMA user_version"), what, latest)
        if version < latest:  # else another process migrated while we waited
            for statement in statements(migrations[version]):
                yield statement
            version += 1
            yield f"PRAGMA user_version={version}"
        yield "COMMIT"
    return version


def _checked_version(rows: list[Any], what: str, latest: int) -> int:
    version = int(rows[0][0]) if rows else 0
    if version > latest:
        raise SchemaError(
            f"{what} schema version {version} is newer than this gateway knows ({latest})"
        )
    return version


async def migrate(
    db: aiosqlite.Connection, migrations: Migrations, what: str, *, when_new: Sequence[str] = ()
) -> int:
    """Run :func:`migration_plan` on an aiosqlite connection in autocommit mode."""
    plan = migration_plan(migrations, what, when_new=when_new)
    try:
        statement = next(plan)
        while True:
            async with db.execute(statement) as cursor:
                rows = list(await cursor.fetchall())
            statement = plan.send(rows)
    except StopIteration as done:
        return int(done.value)
    except BaseException:
        if db.in_transaction:
            await db.rollback()
        raise


def migrate_sync(
    db: sqlite3.Connection, migrations: Migrations, what: str, *, when_new: Sequence[str] = ()
) -> int:
    """Run :func:`migration_plan` on a blocking sqlite3 connection in autocommit mode."""
    plan = migration_plan(migrations, what, when_new=when_new)
    try:
        statement = next(plan)
        while True:
            statement = plan.send(db.execute(statement).fetchall())
    except StopIteration as done:
        return int(done.value)
    except BaseException:
        if db.in_transaction:
            db.rollback()
        raise
