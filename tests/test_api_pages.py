"""Feedback pages (limit and offset) read exactly the slice of the whole stream.

A page and a whole stream are read by different SQL on SQLite (a page takes
its keys from the time index first), so every page is checked against the
stream, and the stream against the order and misuse flags worked out here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.api.db import open_reader
from gateway.api.feedback import Feedback, Selection
from gateway.api.timeutil import Window
from gateway.rows import PressRow
from gateway.stores import open_store
from gateway.stores.read_queries import press_query
from tests.test_api_support import HELSINKI, MAR_1, MISUSE_INTERVAL, OSLO, REGISTRY, greedy_misuse

TERMINALS = (1001, 1002, 1004, 1005)
PAGES = ((7, 0), (7, 5), (50, 13), (1000, 0), (3, 60), (10, 500))


def presses() -> list[PressRow]:
    """Four terminals pressing in the same seconds (ties broken by terminal, then seq),
    bursts inside the misuse interval, follow-ups, and two UTC offsets."""
    rows = []
    for terminal in TERMINALS:
        offset = OSLO if terminal == 1005 else HELSINKI
        for seq in range(40):
            at = MAR_1 + 20 * 3600 + (seq // 2) * 3 + (seq % 2)  # 1 s and 2 s apart
            button = 1 + (seq * 7 + terminal) % 4
            followup = seq % 3 if terminal != 1004 else 0
            rows.append(PressRow(terminal, seq, at, offset, button, followup, False, "tcp", 0))
    return rows


def expected(rows: list[PressRow], s: Selection) -> list[tuple[int, int]]:
    flags = greedy_misuse([(r[0], r[1], r[2]) for r in rows], MISUSE_INTERVAL)
    kept = [
        r
        for r in rows
        if r[0] in s.terminals
        and (s.include_misuse or not flags[(r[0], r[1])])
        and (not s.followups_only or r[5] > 0)
        and _within(r, s.window)
    ]
    kept.sort(key=lambda r: (r[2], r[0], r[1]), reverse=s.descending)
    return [(r[0], r[1]) for r in kept]


def _within(row: PressRow, window: Window | None) -> bool:
    if window is None:
        return True
    at = row[2] + row[3] if window.local else row[2]
    return window.start <= at < window.end


def keys(items: list[Feedback]) -> list[tuple[int, int]]:
    return [(f.terminal_id, f.key) for f in items]


SELECTIONS = [
    Selection(TERMINALS, None),
    Selection(TERMINALS, None, include_misuse=True),
    Selection(TERMINALS, None, followups_only=True, descending=True),
    Selection(TERMINALS, None, include_misuse=True, descending=True),
    # 22:00:20 to 22:00:40 on the wall clock: Helsinki's presses, not Oslo's (an hour behind)
    Selection(TERMINALS, Window(MAR_1 + 22 * 3600 + 20, MAR_1 + 22 * 3600 + 40, local=True)),
    Selection(TERMINALS[:2], Window(MAR_1 + 20 * 3600 + 10, MAR_1 + 20 * 3600 + 50, local=False)),
]


@pytest.mark.parametrize("s", SELECTIONS)
async def test_every_page_is_the_slice_of_the_stream(tmp_path: Path, s: Selection) -> None:
    url = f"sqlite:///{tmp_path / 'central.db'}"
    store = await open_store(url)
    rows = presses()
    try:
        await store.import_registry(REGISTRY)
        await store.write(rows, [])
    finally:
        await store.close()
    db = await open_reader(url)
    try:
        whole = [f async for f in db.feedback(s)]
        assert keys(whole) == expected(rows, s)
        assert whole, "the selection must not be empty, or the pages prove nothing"
        for limit, offset in PAGES:
            page = [f async for f in db.feedback(s, limit, offset)]
            assert page == whole[offset : offset + limit], (limit, offset)
    finally:
        await db.close()


def press_statistics(path: Path) -> str | None:
    db = sqlite3.connect(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        if "sqlite_stat1" not in tables:
            return None
        row = db.execute("SELECT stat FROM sqlite_stat1 WHERE idx = 'press'").fetchone()
    finally:
        db.close()
    return str(row[0]) if row else None


async def test_the_store_keeps_planner_statistics_and_pages_use_the_time_index(
    tmp_path: Path,
) -> None:
    """Statistics after the first 1,000 presses and each doubling; with them a page takes
    its keys from the time index alone (a covering index: no table read per skipped row).
    The plan is checked, not a timing."""
    url = f"sqlite:///{tmp_path / 'central.db'}"
    store = await open_store(url)
    rows = [
        PressRow(terminal, seq, MAR_1 + 7 * seq + terminal % 7, HELSINKI, 1 + seq % 4, 0, False,
                 "tcp", 0)
        for seq in range(800) for terminal in TERMINALS
    ]  # fmt: skip
    try:
        await store.import_registry(REGISTRY)
        await store.write(rows[:999], [])
        assert press_statistics(tmp_path / "central.db") is None
        await store.write(rows[999:1000], [])
        assert press_statistics(tmp_path / "central.db") == "1000 250 1"
        await store.write(rows[1000:1999], [])
        assert press_statistics(tmp_path / "central.db") == "1000 250 1"  # not doubled yet
        await store.write(rows[1999:], [])
        assert press_statistics(tmp_path / "central.db") == "3200 800 1"
    finally:
        await store.close()
    db = await open_reader(url)
    try:
        s = Selection(TERMINALS[:3], Window(MAR_1, MAR_1 + 86400, local=False))
        sql, args = press_query(db.dialect, s, 100, 1000)
        plan = [str(row[-1]) for row in await db.fetch(f"EXPLAIN QUERY PLAN {sql}", args)]
    finally:
        await db.close()
    assert any(step.startswith("SEARCH p USING COVERING INDEX press_time") for step in plan), plan
