"""Read-only access to the central store for the query API, SQLite or PostgreSQL.

Queries are written once with ``?`` placeholders; the PostgreSQL reader
numbers them for asyncpg. Times cross this boundary as Unix seconds: the
SQLite store keeps INTEGER seconds, PostgreSQL keeps timestamptz, and each
reader's :attr:`Reader.dialect` says how to turn one into the other in SQL.

The optional parts of the schema (``press.misuse``, the ``hourly`` table of
hour-precision counts) are probed once at open, so the API works on a store
that does not have them yet: misuse reads as false, hour counts as none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import aiosqlite

from gateway.errors import ConfigError, StoreError

Row: TypeAlias = Sequence[Any]
Query: TypeAlias = tuple[str, Sequence[Any]]

STREAM_CHUNK = 2000
_SQLITE_READERS = 4


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL that differs between the two stores."""

    name: str  # "sqlite" or "postgres"
    has_misuse: bool
    has_hourly: bool
    has_rollup: bool  # press_hourly: always on PostgreSQL, on SQLite once the store keeps one
    has_survey_rollup: bool = False  # press_hourly_survey: one row per survey and hour

    def epoch(self, column: str) -> str:
        """``column`` (a stored time) as Unix seconds."""
        if self.name == "postgres":
            return f"extract(epoch FROM {column})::bigint"
        return column

    def time_arg(self, seconds: int) -> Any:
        """A bound compared with a stored time column."""
        if self.name == "postgres":
            return datetime.fromtimestamp(seconds, UTC)
        return seconds

    def shifted(self, column: str, offset: str) -> str:
        """A stored time moved by ``offset`` seconds, still comparable with time_arg()."""
        if self.name == "postgres":
            return f"({column} + {offset} * interval '1 second')"
        return f"({column} + {offset})"

    def misuse(self, alias: str) -> str:
        """The press's misuse flag (false where the store does not keep one yet)."""
        if not self.has_misuse:
            return "false" if self.name == "postgres" else "0"
        return f"{alias}.misuse"

    def not_misuse(self, alias: str) -> str:
        if not self.has_misuse:
            return "true" if self.name == "postgres" else "1"
        return f"NOT {alias}.misuse" if self.name == "postgres" else f"{alias}.misuse = 0"

    def in_list(self, column: str, values: Sequence[int]) -> tuple[str, list[Any]]:
        """``column IN values`` with the values bound as one parameter."""
        if self.name == "postgres":
            return f"{column} = ANY(?::bigint[])", [list(values)]
        within = f"{column} IN (SELECT value FROM json_each(?))"  # noqa: S608 (a column name)
        return within, [json.dumps(list(values))]


class Reader(Protocol):
    """A read-only view of the central store (plus the API's own token table)."""

    dialect: Dialect

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    def streams(
        self, queries: Sequence[Query]
    ) -> AbstractAsyncContextManager[list[AsyncIterator[Row]]]:
        """Several queries read side by side, each streamed in chunks.

        Their connections are taken together, under one lock, so concurrent
        readers of several streams never each hold part of what they need.
        """

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a writing statement (token management only); the number of rows it changed."""

    async def close(self) -> None: ...


async def open_reader(url: str) -> Reader:
    """A reader for ``[store] url`` (an absolute ``sqlite:///PATH`` or ``postgresql://``)."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        return await SqliteReader.open(Path(url[len(prefix) - 1 :]))
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.api.db_postgres import PgReader  # noqa: PLC0415 (asyncpg only if used)

        return await PgReader.open(url)
    raise ConfigError("store.url", f"unsupported store URL {url!r}")


class SqliteReader:
    """A few connections to the SQLite store, one statement in flight on each."""

    def __init__(self, connections: list[aiosqlite.Connection], dialect: Dialect) -> None:
        self.dialect = dialect
        self._all = connections
        self._free: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._take = asyncio.Lock()
        for connection in connections:
            self._free.put_nowait(connection)

    @classmethod
    async def open(cls, path: Path) -> SqliteReader:
        connections: list[aiosqlite.Connection] = []
        try:
            for _ in range(_SQLITE_READERS):
                db = await aiosqlite.connect(path, isolation_level=None)
                connections.append(db)
                await db.execute("PRAGMA busy_timeout=10000")
            tables = {r[0] for r in await _all(connections[0], "SELECT name FROM sqlite_master")}
            columns = {r[1] for r in await _all(connections[0], "PRAGMA table_info(press)")}
        except sqlite3.Error as exc:
            for db in connections:
                await db.close()
            raise StoreError(f"sqlite store {path}: {exc}") from exc
        dialect = Dialect(
            "sqlite", "misuse" in columns, "hourly" in tables, "press_hourly" in tables,
            "press_hourly_survey" in tables,
        )  # fmt: skip
        return cls(connections, dialect)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        db = await self._free.get()
        try:
            return await _all(db, sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store: {exc}") from exc
        finally:
            self._free.put_nowait(db)

    @contextlib.asynccontextmanager
    async def streams(self, queries: Sequence[Query]) -> AsyncIterator[list[AsyncIterator[Row]]]:
        async with self._take:
            taken = [await self._free.get() for _ in queries]
        try:
            async with contextlib.AsyncExitStack() as stack:
                cursors = [
                    await stack.enter_async_context(db.execute(sql, args))
                    for db, (sql, args) in zip(taken, queries, strict=True)
                ]
                yield [_chunks(cursor) for cursor in cursors]
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store: {exc}") from exc
        finally:
            for db in taken:
                self._free.put_nowait(db)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        db = await self._free.get()
        try:
            async with db.execute(sql, args) as cursor:
                return cursor.rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store: {exc}") from exc
        finally:
            self._free.put_nowait(db)

    async def close(self) -> None:
        for db in self._all:
            await db.close()


async def _chunks(cursor: aiosqlite.Cursor) -> AsyncIterator[Row]:
    try:
        while rows := await cursor.fetchmany(STREAM_CHUNK):
            for row in rows:
                yield row
    except sqlite3.Error as exc:
        raise StoreError(f"sqlite store: {exc}") from exc


async def _all(db: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> list[Row]:
    async with db.execute(sql, args) as cursor:
        return list(await cursor.fetchall())
