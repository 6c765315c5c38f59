"""Feedback rows: every stored press, and every hour-precision count expanded into presses.

Presses come from ``press``; SMS hour counts from ``hourly`` as ``count`` rows
each. Both are read in time order by their own index-friendly query and merged
here, so a page reads only what it returns and an export streams in constant
memory. Ids are stable UUIDs: a press is ``terminal_id:seq``, the n-th press
of an hour count is ``terminal_id:hour:button:n`` (n = 1..count), so a later
batch that raises the count adds ids and keeps the earlier ones.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.api.db import Dialect, Reader, Row
from gateway.api.timeutil import MAX_OFFSET_S, Window

_LIMIT_MAX = 2**62  # LIMIT and OFFSET are bigint in both stores
FEEDBACK_NAMESPACE = uuid.UUID("6f1c2a4e-3b5d-5e7f-9a0b-1c2d3e4f5a6b")


_NAMESPACE_BYTES = FEEDBACK_NAMESPACE.bytes


def uuid5(name: str) -> str:
    """``str(uuid.uuid5(FEEDBACK_NAMESPACE, name))``, several times faster (a page has 10,000)."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def press_id(terminal_id: int, seq: int) -> str:
    return uuid5(f"{terminal_id}:{seq}")


def hour_press_id(terminal_id: int, hour: int, button: int, n: int) -> str:
    return uuid5(f"{terminal_id}:{hour}:{button}:{n}")


@dataclass(slots=True)  # not frozen: a page makes 10,000, and frozen __init__ is slower
class Feedback:
    """One press: to the second (``precision`` "second") or to the hour ("hour")."""

    utc: int  # Unix seconds; for an hour count, the start of its hour
    kind: int  # 0 press, 1 expanded hour count (the tie-break after time)
    terminal_id: int
    key: int  # seq, or the button of an hour count
    n: int  # 1..count within an hour count; 0 for a press
    utc_offset_s: int
    button: int  # 1-based, as stored
    followup: int
    misuse: bool
    precision: str
    transport: str
    clock_corrected: bool

    @property
    def feedback_id(self) -> str:
        if self.kind == 0:
            return press_id(self.terminal_id, self.key)
        return hour_press_id(self.terminal_id, self.utc, self.key, self.n)

    def sort_key(self) -> tuple[int, int, int, int, int]:
        return (self.utc, self.kind, self.terminal_id, self.key, self.n)


@dataclass(frozen=True, slots=True)
class Selection:
    terminals: Sequence[int]
    window: Window | None
    include_misuse: bool = False
    followups_only: bool = False
    descending: bool = False


def time_filter(
    d: Dialect, column: str, offset: str, window: Window | None
) -> tuple[str, list[Any]]:
    """SQL conditions (each starting with AND) for a stored time column within a window."""
    if window is None:
        return "", []
    if not window.local:
        return (
            f" AND {column} >= ? AND {column} < ?",
            [d.time_arg(window.start), d.time_arg(window.end)],
        )
    # Index-friendly bounds widened by the widest offset, then the exact local test.
    local = d.shifted(column, offset)
    return (
        f" AND {column} >= ? AND {column} < ? AND {local} >= ? AND {local} < ?",
        [
            d.time_arg(window.start - MAX_OFFSET_S),
            d.time_arg(window.end + MAX_OFFSET_S),
            d.time_arg(window.start),
            d.time_arg(window.end),
        ],
    )


def _press_query(
    d: Dialect, s: Selection, limit: int | None, offset: int = 0
) -> tuple[str, list[Any]]:
    where, args = d.in_list("p.terminal_id", s.terminals)
    times, more = time_filter(d, "p.occurred_at", "p.utc_offset_s", s.window)
    args += more
    if not s.include_misuse:
        where += f" AND {d.not_misuse('p')}"
    if s.followups_only:
        where += " AND p.followup > 0"
    order = " DESC" if s.descending else ""
    by = f" ORDER BY p.occurred_at{order}, p.terminal_id{order}, p.seq{order}"
    columns = (
        f"p.occurred_at, p.terminal_id, p.seq, p.utc_offset_s, p.button, p.followup,"
        f" {d.misuse('p')}, p.precision, p.transport, p.clock_corrected"
    )
    selected = f" FROM press AS p WHERE {where}{times}{by}"
    if limit is None and not offset:
        return f"SELECT {columns}{selected}", args
    args += [_LIMIT_MAX if limit is None else min(limit, _LIMIT_MAX), min(offset, _LIMIT_MAX)]
    if d.name == "postgres":
        return f"SELECT {columns}{selected} LIMIT ? OFFSET ?", args
    # SQLite seeks a WITHOUT ROWID table row for every index entry it reads, even
    # one the WHERE or the OFFSET then discards. So a page takes its keys from
    # the time index alone (it holds every column filtered on) and only then
    # reads its own rows, which makes a page deep into a month ten times faster.
    keys = f"SELECT p.occurred_at, p.terminal_id, p.seq{selected} LIMIT ? OFFSET ?"
    return (
        f"SELECT {columns} FROM ({keys}) AS k CROSS JOIN press AS p"  # noqa: S608
        f" ON p.terminal_id = k.terminal_id AND p.seq = k.seq{by}",
        args,
    )


def _hour_query(d: Dialect, s: Selection, limit: int | None) -> tuple[str, list[Any]]:
    where, args = d.in_list("h.terminal_id", s.terminals)
    times, more = time_filter(d, "h.hour", "h.utc_offset_s", s.window)
    args += more
    order = " DESC" if s.descending else ""
    if d.name == "postgres":
        head, numbers = "", "CROSS JOIN LATERAL generate_series(1, h.count) AS n(i)"
    else:
        head = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
            " WHERE i < (SELECT coalesce(max(count), 0) FROM hourly)) "
        )
        numbers = "JOIN n ON n.i <= h.count"
    sql = (
        f"{head}SELECT h.hour, h.terminal_id, h.button, n.i, h.utc_offset_s, h.transport"  # noqa: S608
        f" FROM hourly AS h {numbers} WHERE h.count > 0 AND {where}{times}"
        f" ORDER BY h.hour{order}, h.terminal_id{order}, h.button{order}, n.i{order}"
    )
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, args


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


async def feedbacks(
    db: Reader, s: Selection, limit: int | None = None, offset: int = 0
) -> AsyncIterator[Feedback]:
    """The selected feedback in time order, from ``offset``, at most ``limit``; streamed.

    Without hour counts in the selection (the usual case) the store skips the
    offset itself; with them both streams are read from the start and merged.
    """
    d = db.dialect
    if not s.terminals:
        return
    if not (d.has_hourly and not s.followups_only and await _any_hours(db, s)):
        async with db.streams([_press_query(d, s, limit, offset)]) as streams:
            async for row in streams[0]:
                yield _press(row)
        return
    upto = None if limit is None else min(offset + limit, _LIMIT_MAX)
    queries = [_press_query(d, s, upto), _hour_query(d, s, upto)]
    async with db.streams(queries) as streams:
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


async def _any_hours(db: Reader, s: Selection) -> bool:
    where, args = db.dialect.in_list("h.terminal_id", s.terminals)
    times, more = time_filter(db.dialect, "h.hour", "h.utc_offset_s", s.window)
    rows = await db.fetch(
        f"SELECT 1 FROM hourly AS h WHERE h.count > 0 AND {where}{times} LIMIT 1",  # noqa: S608
        [*args, *more],
    )
    return bool(rows)


async def _mapped(rows: AsyncIterator[Row], convert: Any) -> AsyncIterator[Feedback]:
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
