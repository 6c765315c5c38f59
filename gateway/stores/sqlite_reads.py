"""The SQLite store's reader: a few connections, one statement in flight on each."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.errors import StoreError
from gateway.stores.reads import STREAM_CHUNK, Dialect, Query, Row
from gateway.stores.schema import API_TOKEN, HOURLY, PRESS, PRESS_HOURLY, PRESS_HOURLY_SURVEY
from gateway.stores.sql_reader import SqlReader

_CONNECTIONS = 4
_TOKEN_TABLE = f"""
CREATE TABLE IF NOT EXISTS {API_TOKEN} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    company TEXT NOT NULL,
    scope INTEGER,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
)"""


class SqliteReader(SqlReader):
    """A :class:`~gateway.stores.reads.StoreReader` on one SQLite store file."""

    token_table_sql = _TOKEN_TABLE

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
            for _ in range(_CONNECTIONS):
                db = await aiosqlite.connect(path, isolation_level=None)
                connections.append(db)
                await db.execute("PRAGMA busy_timeout=10000")
            tables = {r[0] for r in await _all(connections[0], "SELECT name FROM sqlite_master")}
            columns = {r[1] for r in await _all(connections[0], f"PRAGMA table_info({PRESS})")}
        except sqlite3.Error as exc:
            for db in connections:
                await db.close()
            raise StoreError(f"sqlite store {path}: {exc}") from exc
        dialect = Dialect(
            "sqlite", "misuse" in columns, HOURLY in tables, PRESS_HOURLY in tables,
            PRESS_HOURLY_SURVEY in tables,
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
