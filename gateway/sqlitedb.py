"""Many rows a statement into SQLite, for the outbox and the central SQLite store."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite

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
