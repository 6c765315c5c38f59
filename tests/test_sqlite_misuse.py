"""Misuse flags in the SQLite store: only terminals whose new presses may change a flag
are walked, and the flags and the survey rollup come out as the walk gives them
whatever the arrival order (the PostgreSQL store's tests are in test_postgres_store)."""

from __future__ import annotations

import itertools
import random
import sqlite3
from pathlib import Path

from gateway.rows import PressRow
from gateway.stores.sqlite import _INSERT_PRESS, _NEEDS_WALK, SqliteStore
from tests.test_postgres_store import JAN_2026, REGISTRY, all_presses, greedy_flags, press


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


async def test_flags_and_rollup_equal_the_walk_whatever_the_arrival_order(tmp_path: Path) -> None:
    rng = random.Random(21)
    gaps = {
        1001: (0, 1, 3, 4, 5, 6, 9, 30, 700),  # around the 5 s interval: a busy terminal
        1002: (5, 5, 6, 60, 700) * 10 + (2,),  # 5 s or more apart, now and then not
        4242: (0, 1, 30),
    }
    times: dict[int, list[tuple[int, int]]] = {}
    for terminal_id, choices in gaps.items():
        at = JAN_2026
        times[terminal_id] = []
        for seq in range(400):
            at += rng.choice(choices)
            times[terminal_id].append((at, seq))
    rows = [press(t, seq, at, 1 + seq % 4) for t, ts in times.items() for at, seq in ts]
    in_order = sorted(rows, key=lambda p: (p.occurred_at, p.terminal_id, p.seq))
    late = list(in_order)
    for i in range(0, len(late) - 60, 97):  # some presses held back a few batches
        late[i : i + 60] = late[i + 10 : i + 60] + late[i : i + 10]
    found = []
    for name, order in (("in_order", in_order), ("late", late)):
        path = tmp_path / f"{name}.db"
        store = await SqliteStore.open(path)
        try:
            await store.import_registry(REGISTRY)
            start = 0
            for size in itertools.cycle((3, 23, 7)):
                if start >= len(order):
                    break
                await store.write(order[start : start + size], [])
                start += size
            await store.write(order[:100], [])  # resends change nothing
            stored = await all_presses(store)
        finally:
            await store.close()
        for terminal_id in (1001, 1002):
            flags = {p.seq: p.misuse for p in stored if p.terminal_id == terminal_id}
            assert flags == greedy_flags(times[terminal_id], 5)
        assert not any(p.misuse for p in stored if p.terminal_id == 4242)
        rollup, grouped = survey_rollup_and_grouped(path)
        assert rollup == grouped
        found.append((sorted(stored, key=lambda p: (p.terminal_id, p.seq)), rollup))
    assert found[0] == found[1]
    assert any(p.misuse for p in found[0][0])


def survey_rollup_and_grouped(path: Path) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """press_hourly_survey as the triggers kept it, and as a GROUP BY over press gives it."""
    db = sqlite3.connect(path)
    try:
        rollup = db.execute(
            "SELECT survey, hour, utc_offset_s, button, misuse, presses FROM press_hourly_survey"
            " WHERE presses <> 0 ORDER BY 1, 2, 3, 4, 5"
        ).fetchall()
        grouped = db.execute(
            "SELECT coalesce(t.survey, -1),"
            " p.occurred_at - ((p.occurred_at + p.utc_offset_s) % 3600 + 3600) % 3600,"
            " p.utc_offset_s, p.button, p.misuse, count(*)"
            " FROM press AS p LEFT JOIN terminal AS t ON t.id = p.terminal_id"
            " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
        ).fetchall()
    finally:
        db.close()
    return rollup, grouped
