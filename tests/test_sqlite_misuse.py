"""Misuse flags in the SQLite store: only terminals whose new presses may change a flag
are walked. That the flags and rollups equal the walk whatever the arrival order is
tested on both stores in test_postgres_store."""

from __future__ import annotations

from pathlib import Path

from gateway.rows import PressRow
from gateway.stores.sqlite import _INSERT_PRESS, _NEEDS_WALK, SqliteStore
from tests.test_postgres_store import (
    JAN_2026,
    REGISTRY,
    press,
)


async def walks_named(store: SqliteStore, batch: list[PressRow]) -> list[int]:
    """The terminals the store would walk after inserting ``batch``, the batch then undone."""
    db = store._db
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.executemany(_INSERT_PRESS, batch)
        async with db.execute(_NEEDS_WALK) as cursor:
            return sorted(row[0] for row in await cursor.fetchall())
    finally:
        await db.execute("ROLLBACK")  # fresh_press (a temp table) is rolled back too


async def test_only_presses_that_may_change_flags_are_walked(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "central.db")
    try:
        await store.import_registry(REGISTRY)  # misuse_interval_s = 5
        await store.write([press(1001, 1, JAN_2026), press(1002, 1, JAN_2026)], [])
        # in order, 5 s or more after the last press and apart: counted, no walk
        apart = [press(1001, 2, JAN_2026 + 5), press(1001, 3, JAN_2026 + 10),
                 press(1002, 2, JAN_2026 + 99)]  # fmt: skip
        assert await walks_named(store, apart) == []
        # within 5 s of the last stored press, of each other (the same second too), or earlier
        close = [press(1001, 2, JAN_2026 + 4), press(1002, 2, JAN_2026 + 9),
                 press(1002, 3, JAN_2026 + 13)]  # fmt: skip
        assert await walks_named(store, close) == [1001, 1002]
        assert await walks_named(
            store, [press(1002, 2, JAN_2026 + 60), press(1002, 3, JAN_2026 + 60)]
        ) == [1002]
        assert await walks_named(store, [press(1001, 0, JAN_2026 - 60)]) == [1001]
        # not in the registry (no interval): never walked; a resend is nothing new
        assert await walks_named(store, [press(4242, s, JAN_2026) for s in range(3)]) == []
        assert await walks_named(store, [press(1001, 1, JAN_2026 + 1)]) == []
    finally:
        await store.close()
