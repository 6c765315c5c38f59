"""The query methods of :class:`~gateway.stores.reads.StoreReader`, once for both stores.

A backend's reader (``sqlite_reads.py``, ``postgres_reads.py``) supplies the
connections (fetch, streams, execute) and its dialect; this class runs the
queries of ``read_queries.py`` on them and turns rows into the query side's
values. Feedback is read by two queries in time order (presses, and hour
counts expanded into presses) and merged here, so a page reads only what it
returns and an export streams in constant memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import astuple
from datetime import datetime
from typing import Any

from gateway.stores import read_queries as q
from gateway.stores.reads import (
    CatalogRows,
    Count,
    Dialect,
    Feedback,
    NewToken,
    Query,
    Row,
    Selection,
    TokenInfo,
    Window,
)
from gateway.stores.schema import (
    API_TOKEN,
    COMPANY,
    LOCATION,
    PRESS,
    SURVEY,
    TERMINAL,
    TOKEN_COLUMNS,
)

_TOKEN_COLUMNS = ", ".join(TOKEN_COLUMNS)
_NEW_TOKEN_COLUMNS = ", ".join(NewToken.__dataclass_fields__)


class SqlReader(ABC):
    """A :class:`~gateway.stores.reads.StoreReader` over ``fetch``/``streams``/``execute``."""

    dialect: Dialect
    token_table_sql: str  # CREATE TABLE IF NOT EXISTS for API_TOKEN, in the backend's types

    @abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    @abstractmethod
    def streams(
        self, queries: Sequence[Query]
    ) -> AbstractAsyncContextManager[list[AsyncIterator[Row]]]: ...

    @abstractmethod
    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    # --- the registry ---------------------------------------------------------------

    async def catalog(self) -> CatalogRows:
        return CatalogRows(
            await self.fetch(f"SELECT id, name FROM {COMPANY}"),  # noqa: S608
            await self.fetch(f"SELECT id, company, name, parent, timezone FROM {LOCATION}"),  # noqa: S608
            await self.fetch(
                f"SELECT id, company, question, locale, scale, misuse_interval_s FROM {SURVEY}"  # noqa: S608
            ),
            await self.fetch(f"SELECT id, location, survey, name FROM {TERMINAL}"),  # noqa: S608
        )

    # --- counts ---------------------------------------------------------------------

    async def counts(
        self,
        terminals: Sequence[int],
        surveys: Sequence[int],
        window: Window | None,
        *,
        include_misuse: bool = False,
        grain: str | None = None,
        whole_survey: bool = False,
    ) -> list[Count]:
        if not terminals:
            return []
        found: list[Count] = []
        for sql, args in q.count_queries(
            self.dialect, terminals, surveys, window, include_misuse=include_misuse, grain=grain,
            whole_survey=whole_survey,
        ):  # fmt: skip
            found.extend(
                Count(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]))
                for r in await self.fetch(sql, args)
                if int(r[4]) > 0
            )
        return found

    async def max_seq(self, terminal_id: int) -> int | None:
        # PostgreSQL: press_key, the keys' own table (press is partitioned by month,
        # so its index on terminal_id would be searched in every partition).
        table = "press_key" if self.dialect.name == "postgres" else PRESS
        sql = f"SELECT max(seq) FROM {table} WHERE terminal_id = ?"  # noqa: S608 (a table name)
        rows = await self.fetch(sql, [terminal_id])
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def first_seen(self, terminals: Sequence[int]) -> dict[int, int]:
        if not terminals:
            return {}
        found = {}
        for row in await self.fetch(*q.first_seen_query(self.dialect, terminals)):
            times = [int(v) for v in row[1:] if v is not None]
            if times:
                found[int(row[0])] = min(times)
        return found

    # --- feedback -------------------------------------------------------------------

    async def feedback(
        self, selection: Selection, limit: int | None = None, offset: int = 0
    ) -> AsyncIterator[Feedback]:
        """Without hour counts in the selection (the usual case) the store skips the
        offset itself; with them both streams are read from the start and merged."""
        d, s = self.dialect, selection
        if not s.terminals:
            return
        if not (
            d.has_hourly and not s.followups_only and await self.fetch(*q.any_hours_query(d, s))
        ):
            async with self.streams([q.press_query(d, s, limit, offset)]) as streams:
                async for row in streams[0]:
                    yield _press(row)
            return
        upto = None if limit is None else min(offset + limit, q.LIMIT_MAX)
        queries = [q.press_query(d, s, upto), q.hour_query(d, s, upto)]
        async with self.streams(queries) as streams:
            merged = _merge(
                _mapped(streams[0], _press), _mapped(streams[1], _hour), descending=s.descending
            )
            skipped = taken = 0
            async for item in merged:
                if skipped < offset:
                    skipped += 1
                    continue
                if limit is not None and taken >= limit:
                    return
                taken += 1
                yield item

    # --- API credentials ------------------------------------------------------------

    async def ensure_token_table(self) -> None:
        await self.execute(self.token_table_sql)

    async def add_token(self, token: NewToken) -> None:
        marks = ", ".join("?" * len(NewToken.__dataclass_fields__))
        await self.execute(
            f"INSERT INTO {API_TOKEN} ({_NEW_TOKEN_COLUMNS}) VALUES ({marks})",  # noqa: S608
            astuple(token),
        )

    async def tokens(self) -> list[TokenInfo]:
        rows = await self.fetch(f"SELECT {_TOKEN_COLUMNS} FROM {API_TOKEN} ORDER BY id")  # noqa: S608
        return [TokenInfo(*r) for r in rows]

    async def token_of_client(self, client_id: str) -> TokenInfo | None:
        rows = await self.fetch(
            f"SELECT {_TOKEN_COLUMNS} FROM {API_TOKEN} WHERE client_id = ?",  # noqa: S608
            (client_id,),
        )
        return TokenInfo(*rows[0]) if rows else None

    async def token_by_hash(self, token_sha256: str) -> tuple[TokenInfo, str] | None:
        rows = await self.fetch(
            f"SELECT {_TOKEN_COLUMNS}, token_sha256 FROM {API_TOKEN} WHERE token_sha256 = ?",  # noqa: S608
            (token_sha256,),
        )
        width = len(TOKEN_COLUMNS)
        return (TokenInfo(*rows[0][:width]), rows[0][width]) if rows else None

    async def revoke_token(self, client_id: str, at: int) -> bool:
        changed = await self.execute(
            f"UPDATE {API_TOKEN} SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL",  # noqa: S608
            (at, client_id),
        )
        return changed > 0


def _seconds(value: Any) -> int:
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


def _press(row: Row) -> Feedback:
    return Feedback(
        _seconds(row[0]), 0, int(row[1]), int(row[2]), 0, int(row[3]), int(row[4]), int(row[5]),
        bool(row[6]), str(row[7]), str(row[8]), bool(row[9]),
    )  # fmt: skip


def _hour(row: Row) -> Feedback:
    return Feedback(
        _seconds(row[0]), 1, int(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[2]), 0,
        False, "hour", str(row[5]), False,
    )  # fmt: skip


async def _mapped(
    rows: AsyncIterator[Row], convert: Callable[[Row], Feedback]
) -> AsyncIterator[Feedback]:
    async for row in rows:
        yield convert(row)


async def _merge(
    a: AsyncIterator[Feedback], b: AsyncIterator[Feedback], *, descending: bool
) -> AsyncIterator[Feedback]:
    """Two sorted streams as one, in the same order."""
    x = await anext(a, None)
    y = await anext(b, None)
    while x is not None and y is not None:
        first = (x.sort_key() > y.sort_key()) if descending else (x.sort_key() <= y.sort_key())
        if first:
            yield x
            x = await anext(a, None)
        else:
            yield y
            y = await anext(b, None)
    rest, current = (a, x) if x is not None else (b, y)
    while current is not None:
        yield current
        current = await anext(rest, None)
