"""The PostgreSQL store's reader: an asyncpg pool, streams in read-only transactions."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeAlias, cast

import asyncpg
import asyncpg.pool

from gateway.errors import ConfigError, StoreError
from gateway.stores.reads import STREAM_CHUNK, Dialect, Query, Row
from gateway.stores.schema import API_TOKEN, HOURLY, PRESS, PRESS_HOURLY_SURVEY
from gateway.stores.sql_reader import SqlReader

_Pool: TypeAlias = "asyncpg.pool.Pool[asyncpg.Record]"
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_PLACEHOLDER = re.compile(r"\?")
_POOL_SIZE = 8
_COMMAND_TIMEOUT_S = 60.0
_TOKEN_TABLE = f"""
CREATE TABLE IF NOT EXISTS {API_TOKEN} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id text NOT NULL UNIQUE,
    token_sha256 text NOT NULL UNIQUE,
    company text NOT NULL,
    scope bigint,
    name text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint,
    revoked_at bigint
)"""


def numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...``."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PgReader(SqlReader):
    """A :class:`~gateway.stores.reads.StoreReader` on a PostgreSQL store."""

    token_table_sql = _TOKEN_TABLE

    def __init__(self, pool: _Pool, dialect: Dialect) -> None:
        self._pool = pool
        self.dialect = dialect
        self._take = asyncio.Lock()

    @classmethod
    async def open(cls, url: str) -> PgReader:
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=_POOL_SIZE,
                command_timeout=_COMMAND_TIMEOUT_S,
                server_settings={"application_name": "smiley-gateway-api"},
            )
        except ValueError as exc:
            raise ConfigError("store.url", f"not a usable PostgreSQL URL: {exc}") from exc
        except _DB_ERRORS as exc:
            raise StoreError(f"postgresql store: {exc}") from exc
        try:
            misuse = await pool.fetchval(
                "SELECT count(*) FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = $1"
                " AND column_name = 'misuse'",
                PRESS,
            )
            hourly = await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", HOURLY)
            per_survey = await pool.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", PRESS_HOURLY_SURVEY
            )
        except _DB_ERRORS as exc:
            await pool.close()
            raise StoreError(f"postgresql store: {exc}") from exc
        dialect = Dialect("postgres", bool(misuse), bool(hourly), True, bool(per_survey))
        return cls(pool, dialect)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return cast(list[Row], await self._pool.fetch(numbered(sql), *args))
        except _DB_ERRORS as exc:
            raise StoreError(f"postgresql store: {exc}") from exc

    @contextlib.asynccontextmanager
    async def streams(self, queries: Sequence[Query]) -> AsyncIterator[list[AsyncIterator[Row]]]:
        """Server-side cursors in read-only transactions, a chunk at a time."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with self._take:
                    conns = [await stack.enter_async_context(self._pool.acquire()) for _ in queries]
                for conn in conns:
                    await stack.enter_async_context(conn.transaction(readonly=True))
                yield [
                    _rows(conn.cursor(numbered(sql), *args, prefetch=STREAM_CHUNK))
                    for conn, (sql, args) in zip(conns, queries, strict=True)
                ]
        except _DB_ERRORS as exc:
            raise StoreError(f"postgresql store: {exc}") from exc

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            status = await self._pool.execute(numbered(sql), *args)
        except _DB_ERRORS as exc:
            raise StoreError(f"postgresql store: {exc}") from exc
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def close(self) -> None:
        await self._pool.close()


async def _rows(cursor: Any) -> AsyncIterator[Row]:
    try:
        async for row in cursor:
            yield row
    except _DB_ERRORS as exc:
        raise StoreError(f"postgresql store: {exc}") from exc
