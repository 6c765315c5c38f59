"""The PostgreSQL central store against private clusters started by the tests.

One cluster (with TLS) serves the module, one database per test; the test
that stops the server mid-write gets a cluster of its own. The contract tests
at the top run on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sqlite3
import time
import tomllib
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from firmware_sim.harness import ClusterUnavailable, PrivateCluster, free_port
from gateway.errors import ConfigError, SchemaError, StoreError
from gateway.registry.config import load_config
from gateway.registry.terminals import parse_registry
from gateway.rows import HourCountRow, PressRow, RejectRow
from gateway.stores import CentralStore, ImportSummary, StoredPress, StoredReject, open_store
from gateway.stores.pg_batch import CREATE_STAGE, INSERT_FROM_STAGE, STAGE_COLUMNS
from gateway.stores.postgres import PostgresStore, migrations, partition_name
from gateway.stores.sqlite import SqliteStore
from protocols.frames import Ack, Welcome
from tests.conftest import GatewayHarness
from tests.pg import started_cluster
from tests.support import REGISTRY_TOML, VECTOR_HEX, RawTerminal
from tests.test_tcp import hello

pytestmark = pytest.mark.timeout(120)

JAN_2026 = 1767225600  # 2026-01-01T00:00:00Z
HOUR, DAY = 3600, 86400
REGISTRY = parse_registry(tomllib.loads(REGISTRY_TOML))  # terminals 1001, 1002 at location 11


def press(
    terminal_id: int,
    seq: int,
    occurred_at: int,
    button: int = 1,
    *,
    offset: int = 7200,
    followup: int = 0,
    corrected: bool = False,
    transport: str = "tcp",
) -> PressRow:
    return PressRow(
        terminal_id, seq, occurred_at, offset, button, followup, corrected, transport,
        occurred_at * 1000 + seq % 1000,
    )  # fmt: skip


def reject(uid: str, received_at_ms: int, terminal_id: int | None = 1001) -> StoredReject:
    return StoredReject(
        uid,
        RejectRow(
            received_at_ms, "tcp", "127.0.0.1:5555", terminal_id,
            None if terminal_id is None else 7, "BAD_CRC", "crc 0x1234", b"\x00\xffraw",
        ),
    )  # fmt: skip


# --- clusters and databases -----------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    yield from started_cluster(tls=True)


_databases = itertools.count()


async def new_database(cluster: PrivateCluster) -> str:
    name = f"t{next(_databases)}"
    conn = await asyncpg.connect(cluster.url())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return cluster.url(name)


@pytest.fixture
async def db_url(cluster: PrivateCluster) -> str:
    return await new_database(cluster)


@contextlib.asynccontextmanager
async def sql(url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A plain connection for looking into the database behind the store's back."""
    conn = await asyncpg.connect(url, ssl="disable")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def pg(db_url: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(db_url)
    yield store
    await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CentralStore]:
    """The same contract tests on both stores."""
    if request.param == "sqlite":
        store: CentralStore = await SqliteStore.open(tmp_path / "central.db")
    else:
        cluster = request.getfixturevalue("cluster")
        store = await open_store(await new_database(cluster))
    yield store
    await store.close()


async def all_presses(
    store: CentralStore, since: int | None = None, until: int | None = None
) -> list[StoredPress]:
    return [p async for p in store.presses(since, until)]


async def all_rejects(
    store: CentralStore, since: int | None = None, until: int | None = None
) -> list[StoredReject]:
    return [r async for r in store.rejected(since, until)]


def keys(rows: list[StoredPress]) -> list[tuple[int, int]]:
    return [(p.terminal_id, p.seq) for p in rows]


# --- the store contract, on SQLite and on PostgreSQL ----------------------------------------


async def test_contract_idempotent_writes(any_store: CentralStore) -> None:
    batch = [press(1001, s, JAN_2026 + 60 * s, 1 + s % 4) for s in range(10)]
    await any_store.write(batch, [reject("gw:1", JAN_2026 * 1000)])
    await any_store.write(batch, [reject("gw:1", JAN_2026 * 1000)])  # a retry: nothing changes
    resent = [press(1001, 3, JAN_2026 + 99_999, 4, corrected=True)]  # same key, corrected clock
    await any_store.write(resent, [])
    rows = await all_presses(any_store)
    assert keys(rows) == [(1001, s) for s in range(10)]
    assert (rows[3].occurred_at, rows[3].button, rows[3].clock_corrected) == (
        JAN_2026 + 180, 4, False,
    )  # fmt: skip
    assert [r.uid for r in await all_rejects(any_store)] == ["gw:1"]


async def test_contract_first_copy_in_a_batch_wins(any_store: CentralStore) -> None:
    await any_store.write([press(1001, 5, JAN_2026 + 10, 2), press(1001, 5, JAN_2026 + 20, 3)], [])
    rows = await all_presses(any_store)
    assert [(p.seq, p.occurred_at, p.button) for p in rows] == [(5, JAN_2026 + 10, 2)]


async def test_contract_windows_and_order(any_store: CentralStore) -> None:
    batch = [press(1002, 1, JAN_2026 + 5), press(1001, 9, JAN_2026 + 5), press(1001, 2, JAN_2026)]
    await any_store.write(batch, [reject("b", 2000), reject("a", 2000), reject("c", 1000, None)])
    assert keys(await all_presses(any_store)) == [(1001, 2), (1001, 9), (1002, 1)]
    assert keys(await all_presses(any_store, JAN_2026 + 1, None)) == [(1001, 9), (1002, 1)]
    assert keys(await all_presses(any_store, None, JAN_2026 + 5)) == [(1001, 2)]
    assert await all_presses(any_store, JAN_2026 + 6, JAN_2026 + 99) == []
    rejects = await all_rejects(any_store)
    assert [r.uid for r in rejects] == ["c", "a", "b"]
    assert rejects[0].row == reject("c", 1000, None).row
    assert [r.uid for r in await all_rejects(any_store, 2, 3)] == ["a", "b"]


async def test_contract_registry_import(any_store: CentralStore) -> None:
    assert vars_of(await any_store.import_registry(REGISTRY)) == (6, 0, 0)
    assert vars_of(await any_store.import_registry(REGISTRY)) == (0, 0, 6)
    terminals = dict(REGISTRY.terminals)
    terminals[1002] = replace(terminals[1002], name="Exit")
    terminals[1003] = replace(terminals[1002], id=1003)
    assert vars_of(await any_store.import_registry(replace(REGISTRY, terminals=terminals))) == (
        1, 1, 5,
    )  # fmt: skip


def vars_of(summary: ImportSummary) -> tuple[int, int, int]:
    return summary.added, summary.changed, summary.unchanged


# --- PostgreSQL equals SQLite ---------------------------------------------------------------


def varied_batches(seed: int = 7) -> list[list[PressRow]]:
    """Presses over years, zones with odd offsets, duplicates, resends, unknown terminals."""
    rng = random.Random(seed)
    moments = [
        31_536_000 + 17,
        JAN_2026 - 1,
        JAN_2026,
        JAN_2026 + 40 * DAY,
        4_102_444_799,
        4_294_967_295,
    ]
    batches = []
    seq = itertools.count()
    for _ in range(6):
        batch = []
        for _ in range(300):
            terminal = rng.choice([1001, 1002, 4242])
            occurred = rng.choice(moments) + rng.randrange(0, 3 * DAY)
            offset = rng.choice([7200, 19800, -12600, 0, 20700])
            batch.append(
                press(terminal, next(seq), occurred, rng.randint(1, 4), offset=offset,
                      followup=rng.randint(0, 3), corrected=rng.random() < 0.1,
                      transport=rng.choice(["tcp", "mqtt"]))
            )  # fmt: skip
        batch += [replace_time(p, 3600) for p in rng.sample(batch, 20)]  # in-batch copies
        batches.append(batch)
    batches.append([replace_time(p, -7 * DAY) for p in batches[0][:50]])  # later resends
    return batches


def replace_time(p: PressRow, delta: int) -> PressRow:
    return p._replace(occurred_at=p.occurred_at + delta, button=5 - p.button)


async def test_round_trip_equals_sqlite(pg: PostgresStore, tmp_path: Path) -> None:
    lite = await SqliteStore.open(tmp_path / "central.db")
    try:
        for store in (lite, pg):
            await store.import_registry(REGISTRY)
            for i, batch in enumerate(varied_batches()):
                rejects = [
                    reject(f"gw:{i}:{j}", (JAN_2026 + i * HOUR) * 1000 + j) for j in range(3)
                ]
                await store.write(batch, rejects)
        expected = await all_presses(lite)
        assert len(expected) == 6 * 300
        assert await all_presses(pg) == expected
        for since, until in [
            (JAN_2026, None),
            (None, JAN_2026),
            (JAN_2026 - 5, JAN_2026 + 99 * DAY),
        ]:
            assert await all_presses(pg, since, until) == await all_presses(lite, since, until)
        assert await all_rejects(pg) == await all_rejects(lite)
        window = (JAN_2026 + HOUR, JAN_2026 + 4 * HOUR)
        assert await all_rejects(pg, *window) == await all_rejects(lite, *window)
        assert [p.local_time for p in await all_presses(pg)] == [p.local_time for p in expected]
    finally:
        await lite.close()


# --- idempotency, partitions, rollup ---------------------------------------------------------


async def rollup(url: str) -> list[tuple[Any, ...]]:
    async with sql(url) as conn:
        rows = await conn.fetch(
            "SELECT survey, location, terminal_id, hour, utc_offset_s, button, misuse, presses"
            " FROM press_hourly WHERE presses <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7"
        )
    return [tuple(r) for r in rows]


async def survey_rollup(url: str) -> list[tuple[Any, ...]]:
    async with sql(url) as conn:
        rows = await conn.fetch(
            "SELECT survey, hour, utc_offset_s, button, misuse, presses"
            " FROM press_hourly_survey WHERE presses <> 0 ORDER BY 1, 2, 3, 4, 5"
        )
    return [tuple(r) for r in rows]


def survey_totals(terminal_rollup: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """press_hourly summed over locations and terminals: what press_hourly_survey holds."""
    totals: Counter[tuple[Any, ...]] = Counter()
    for survey, _, _, hour, offset, button, misuse, presses in terminal_rollup:
        totals[(survey, hour, offset, button, misuse)] += presses
    return sorted((*key, n) for key, n in totals.items() if n)


async def test_resends_change_nothing_anywhere(pg: PostgresStore, db_url: str) -> None:
    await pg.import_registry(REGISTRY)
    batch = [press(1001, s, JAN_2026 + 700 * s, 1 + s % 4) for s in range(100)]
    await pg.write(batch, [])
    before = (await all_presses(pg), await rollup(db_url))
    await pg.write(batch, [])  # as after a lost commit reply
    await pg.write(
        [replace_time(p, 86_400 * 40) for p in batch[::3]], []
    )  # clock-corrected resends
    assert (await all_presses(pg), await rollup(db_url)) == before
    async with sql(db_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM press") == 100
        assert await conn.fetchval("SELECT count(*) FROM press_key") == 100
        assert await conn.fetchval("SELECT sum(presses) FROM press_hourly") == 100
        # the resend of February 2026 made a partition, but nothing went into it
        assert await conn.fetchval(f"SELECT count(*) FROM {partition_name(2026, 2)}") == 0


async def test_partitions_made_on_demand_far_past_and_future(
    pg: PostgresStore, db_url: str
) -> None:
    moments = {
        (1970, 1): 5,
        (1971, 5): 44_000_000,
        (2026, 1): JAN_2026,
        (2026, 2): JAN_2026 + 31 * DAY,  # the first second of February
        (2099, 12): 4_102_444_799,  # the last second of 2099
        (2106, 2): 4_294_967_295,  # the last second a 32-bit time can say
    }
    await pg.write([press(1001, i, t) for i, t in enumerate(moments.values())], [])
    async with sql(db_url) as conn:
        placed = await conn.fetch(
            "SELECT tableoid::regclass::text AS part, extract(epoch FROM occurred_at)::bigint AS t"
            " FROM press ORDER BY occurred_at"
        )
        assert [(r["part"], r["t"]) for r in placed] == [
            (partition_name(*month), t) for month, t in moments.items()
        ]
        assert await conn.fetchval("SELECT count(*) FROM press_default") == 0
    assert [p.occurred_at for p in await all_presses(pg)] == list(moments.values())


async def test_rows_in_the_default_partition_move_to_their_new_month(
    pg: PostgresStore, db_url: str
) -> None:
    """A month that once had no partition (say, one dropped by hand) gets one, rows and all."""
    may_2030 = 1904169600
    async with sql(db_url) as conn:
        await conn.execute(
            "INSERT INTO press (terminal_id, seq, occurred_at, utc_offset_s, button, followup,"
            " transport, clock_corrected, received_at_ms) VALUES (1001, 1, to_timestamp($1),"
            " 0, 2, 0, 'tcp', false, 0)",
            may_2030,
        )
        assert await conn.fetchval("SELECT count(*) FROM press_default") == 1
    await pg.write([press(1001, 2, may_2030 + 60)], [])
    async with sql(db_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM press_default") == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {partition_name(2030, 5)}") == 2
    assert [p.seq for p in await all_presses(pg)] == [1, 2]


async def press_grouped_by_hour(url: str) -> list[tuple[Any, ...]]:
    """What press_hourly must hold: the presses grouped as the rollup groups them."""
    async with sql(url) as conn:
        rows = await conn.fetch(
            "SELECT coalesce(t.survey, -1), coalesce(t.location, -1), p.terminal_id,"
            " date_trunc('hour', p.occurred_at + make_interval(secs => p.utc_offset_s), 'UTC')"
            "   - make_interval(secs => p.utc_offset_s),"
            " p.utc_offset_s, p.button, p.misuse, sum(p.count)"
            " FROM press AS p LEFT JOIN terminal AS t ON t.id = p.terminal_id"
            " GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7"
        )
    return [tuple(r) for r in rows]


async def test_rollup_equals_group_by_over_press(pg: PostgresStore, db_url: str) -> None:
    await pg.import_registry(REGISTRY)
    for batch in varied_batches(seed=11):
        await pg.write(batch, [])
    half_hour_zone = press(1002, 10**6, JAN_2026 + 10 * HOUR + 15 * 60, 3, offset=19800)
    await pg.write([half_hour_zone], [])  # 10:15Z is 15:45 local; that hour began 09:30Z
    grouped = await press_grouped_by_hour(db_url)
    async with sql(db_url) as conn:
        hour_of_half = await conn.fetchval(
            "SELECT extract(epoch FROM hour)::bigint FROM press_hourly WHERE terminal_id = 1002"
            " AND utc_offset_s = 19800 AND button = 3 AND hour = to_timestamp($1)",
            JAN_2026 + 9 * HOUR + 30 * 60,
        )
    table = await rollup(db_url)
    assert table == grouped
    assert await survey_rollup(db_url) == survey_totals(table)
    assert {row[:2] for row in table} == {(100, 11), (-1, -1)}  # 4242 is not registered
    assert sum(row[-1] for row in table) == len(await all_presses(pg))
    assert hour_of_half == JAN_2026 + 9 * HOUR + 30 * 60


# --- misuse flags and hour counts ---------------------------------------------------------


def greedy_flags(times: list[tuple[int, int]], interval_s: int) -> dict[int, bool]:
    """The vendor's rule by hand: misuse within the interval after the last counted press."""
    flags, last = {}, None
    for at, seq in sorted(times):
        flags[seq] = last is not None and at - last < interval_s
        if not flags[seq]:
            last = at
    return flags


async def test_contract_misuse_flags_in_order(any_store: CentralStore) -> None:
    await any_store.import_registry(REGISTRY)  # survey 100: misuse_interval_s = 5
    offsets = [0, 2, 4, 5, 6, 9, 10, 30]
    await any_store.write([press(1001, i, JAN_2026 + at) for i, at in enumerate(offsets)], [])
    flags = [p.misuse for p in await all_presses(any_store)]
    # 0 counted; 2, 4 within 5 s of it; 5 counted; 6, 9 within 5 s of 5; 10 counted; 30 counted
    assert flags == [False, True, True, False, True, True, False, False]


async def test_contract_misuse_flags_do_not_depend_on_arrival_order(
    any_store: CentralStore,
) -> None:
    await any_store.import_registry(REGISTRY)
    rng = random.Random(5)
    times = [(JAN_2026 + rng.randrange(0, 400), seq) for seq in range(300)]
    rows = [press(1001, seq, at) for at, seq in times]
    unknown = [press(4242, seq, at) for at, seq in times[:20]]  # no survey: never misuse
    rng.shuffle(rows)
    for start in range(0, len(rows), 37):  # late and early presses in every batch
        await any_store.write(rows[start : start + 37], [])
    await any_store.write(rows[:50] + unknown, [])  # resends change nothing
    stored = await all_presses(any_store)
    assert {p.seq: p.misuse for p in stored if p.terminal_id == 1001} == greedy_flags(times, 5)
    assert not any(p.misuse for p in stored if p.terminal_id == 4242)


async def test_contract_hour_counts_replaced_by_a_later_batch_only(
    any_store: CentralStore,
) -> None:
    def hours(batch_seq: int, counts: list[int], hour: int = JAN_2026) -> list[HourCountRow]:
        return [
            HourCountRow(1002, hour, 3600, button, n, batch_seq, "sms", 1000 * batch_seq)
            for button, n in enumerate(counts, start=1)
        ]

    await any_store.write([], [], hours(41, [1, 0, 5, 12]))
    await any_store.write(
        [], [], hours(42, [2, 0, 6, 12]) + hours(42, [0, 0, 0, 1], JAN_2026 + HOUR)
    )
    await any_store.write([], [], hours(41, [9, 9, 9, 9]))  # older: changes nothing
    await any_store.write([], [], hours(42, [7, 7, 7, 7]))  # same batch again: nothing
    stored = await all_presses(any_store)
    assert [(p.occurred_at - JAN_2026, p.button, p.count, p.seq) for p in stored] == [
        (0, 1, 2, 42), (0, 3, 6, 42), (0, 4, 12, 42), (HOUR, 4, 1, 42),
    ]  # fmt: skip
    assert {(p.precision, p.transport, p.local_time[-6:]) for p in stored} == {
        ("hour", "sms", "+01:00")
    }


async def test_sqlite_survey_rollup_follows_inserts_resends_and_misuse(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "central.db")
    try:
        await store.import_registry(REGISTRY)
        rng = random.Random(9)
        rows = [press(1001 + seq % 2, seq, JAN_2026 + rng.randrange(0, 3 * HOUR), 1 + seq % 4)
                for seq in range(400)]  # fmt: skip
        rows.append(press(4242, 1, JAN_2026, offset=19800))  # unregistered, half-hour zone
        rng.shuffle(rows)
        for start in range(0, len(rows), 50):
            await store.write(rows[start : start + 50], [])
        await store.write(rows[:100], [])  # resends
    finally:
        await store.close()
    rollup_rows, grouped = sqlite_survey_rollup(tmp_path / "central.db")
    db = sqlite3.connect(tmp_path / "central.db")
    try:
        misuse = db.execute("SELECT count(*) FROM press WHERE misuse = 1").fetchone()[0]
    finally:
        db.close()
    assert rollup_rows == grouped
    assert sum(r[-1] for r in rollup_rows) == 401
    assert misuse > 0  # the late presses did flip flags, and the rollup followed
    assert (-1, JAN_2026 - 1800, 19800, 1, 0, 1) in rollup_rows


def sqlite_survey_rollup(path: Path) -> tuple[list[Any], list[Any]]:
    """press_hourly_survey as the SQLite store's triggers kept it, and as a GROUP BY
    over press gives it."""
    db = sqlite3.connect(path)
    try:
        rollup_rows = db.execute(
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
    return rollup_rows, grouped


async def test_late_presses_move_rollup_counts_between_misuse_rows(
    pg: PostgresStore, db_url: str
) -> None:
    await pg.import_registry(REGISTRY)
    await pg.write([press(1001, 1, JAN_2026), press(1001, 3, JAN_2026 + 6)], [])
    await pg.write([press(1001, 2, JAN_2026 + 3)], [])  # late, within 5 s of seq 1: misuse
    await pg.write([press(1001, 0, JAN_2026 - 2)], [])  # earlier still: seq 1 is now misuse,
    # so seq 2 (5 s after seq 0) is counted, and seq 3 is within 5 s of it
    flags = {p.seq: p.misuse for p in await all_presses(pg)}
    assert flags == {0: False, 1: True, 2: False, 3: True}
    table = await rollup(db_url)
    by_flag = Counter[bool]()
    for row in table:
        by_flag[row[6]] += row[7]
    assert by_flag == {False: 2, True: 2}
    assert await survey_rollup(db_url) == survey_totals(table)


async def walks_named(url: str, batch: list[PressRow]) -> list[int]:
    """The terminals the insert statement sends to the misuse walk, the batch then undone."""
    async with sql(url) as conn:
        await conn.execute(CREATE_STAGE)
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.copy_records_to_table("press_stage", records=batch, columns=STAGE_COLUMNS)
            return sorted(r[0] for r in await conn.fetch(INSERT_FROM_STAGE))
        finally:
            await tx.rollback()


async def test_only_presses_that_may_change_flags_are_walked(
    pg: PostgresStore, db_url: str
) -> None:
    await pg.import_registry(REGISTRY)  # survey 100: misuse_interval_s = 5
    await pg.write([press(1001, 1, JAN_2026), press(1002, 1, JAN_2026)], [])
    # in order, 5 s or more after the last press and apart: counted, no walk
    assert await walks_named(db_url, [press(1001, 2, JAN_2026 + 5), press(1001, 3, JAN_2026 + 10),
                                      press(1002, 2, JAN_2026 + 99)]) == []  # fmt: skip
    # within 5 s of the last stored press, of each other, or earlier: walked
    assert await walks_named(db_url, [press(1001, 2, JAN_2026 + 4), press(1002, 2, JAN_2026 + 9),
                                      press(1002, 3, JAN_2026 + 13)]) == [1001, 1002]  # fmt: skip
    assert await walks_named(db_url, [press(1001, 0, JAN_2026 - 60)]) == [1001]
    # no misuse interval (not in the registry): never walked; resends: nothing new to walk
    assert await walks_named(db_url, [press(4242, s, JAN_2026) for s in range(3)]) == []
    assert await walks_named(db_url, [press(1001, 1, JAN_2026 + 1)]) == []


def arrival_orders() -> tuple[dict[int, list[tuple[int, int]]], list[PressRow], list[PressRow]]:
    """Presses of three terminals (1001 busy around the 5 s interval, 1002 mostly apart,
    4242 unregistered): each terminal's (time, seq) list, and the presses in time order
    and with some held back a few batches."""
    rng = random.Random(21)
    gaps = {
        1001: (0, 1, 3, 4, 5, 6, 9, 30, 700),
        1002: (5, 5, 6, 60, 700) * 10 + (2,),
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
    for i in range(0, len(late) - 60, 97):
        late[i : i + 60] = late[i + 10 : i + 60] + late[i : i + 10]
    return times, in_order, late


async def write_in_small_batches(store: CentralStore, order: list[PressRow]) -> None:
    """Batches of 3, 23 and 7 in turn (first presses at the edges), then resends."""
    start = 0
    for size in itertools.cycle((3, 23, 7)):
        if start >= len(order):
            break
        await store.write(order[start : start + size], [])
        start += size
    await store.write(order[:100], [])  # resends change nothing


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_flags_and_rollup_equal_the_walk_whatever_the_arrival_order(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """In order (mostly not walked), close together or late (walked): the same flags."""
    times, in_order, late = arrival_orders()
    found = []
    for name, order in (("in_order", in_order), ("late", late)):
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / name}.db"
        else:
            url = await new_database(request.getfixturevalue("cluster"))
        store = await open_store(url)
        try:
            await store.import_registry(REGISTRY)
            await write_in_small_batches(store, order)
            stored = sorted(await all_presses(store), key=lambda p: (p.terminal_id, p.seq))
        finally:
            await store.close()
        for terminal_id in (1001, 1002):
            flags = {p.seq: p.misuse for p in stored if p.terminal_id == terminal_id}
            assert flags == greedy_flags(times[terminal_id], 5)
        assert not any(p.misuse for p in stored if p.terminal_id == 4242)
        found.append((stored, await rollup_as_kept(kind, url)))
    assert found[0] == found[1]
    assert any(p.misuse for p in found[0][0])


async def rollup_as_kept(kind: str, url: str) -> list[Any]:
    """The store's survey rollup, checked against what a GROUP BY over press gives."""
    if kind == "sqlite":
        kept, grouped = sqlite_survey_rollup(Path(url.removeprefix("sqlite:///")))
        assert kept == grouped
        return kept
    table = await rollup(url)
    assert table == await press_grouped_by_hour(url)
    assert await survey_rollup(url) == survey_totals(table)
    return table


# --- several gateways --------------------------------------------------------------------


async def test_two_gateways_write_overlapping_batches_at_once(cluster: PrivateCluster) -> None:
    url = await new_database(cluster)
    a, b = await asyncio.gather(PostgresStore.open(url), PostgresStore.open(url))
    try:
        await a.import_registry(REGISTRY)
        # 6,000 presses over 24 months (so both race to make the same partitions),
        # written by both in overlapping batches, one forwards and one backwards.
        rows = [
            press(1001 + s % 2, s, JAN_2026 + (s % 24) * 31 * DAY + s, 1 + s % 4)
            for s in range(6000)
        ]
        mine = [rows[i : i + 700] for i in range(0, 6000, 500)]
        theirs = [rows[i : i + 900] for i in range(0, 6000, 400)][::-1]

        async def send(store: PostgresStore, batches: list[list[PressRow]]) -> None:
            for batch in batches:
                await store.write(batch, [])

        await asyncio.gather(send(a, mine), send(b, theirs))
        stored = await all_presses(b)
        assert len(stored) == 6000
        assert len(set(keys(stored))) == 6000
        async with sql(url) as conn:
            assert await conn.fetchval("SELECT sum(presses) FROM press_hourly") == 6000
            assert await conn.fetchval("SELECT count(*) FROM press_default") == 0
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_three_gateways_migrate_at_once(db_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(db_url) for _ in range(3)))
    try:
        async with sql(db_url) as conn:
            versions = await conn.fetch("SELECT version, name FROM schema_version ORDER BY 1")
            assert [tuple(v) for v in versions] == [(v, n) for v, n, _ in migrations()]
            assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = 'press'") == 1
        await stores[0].write([press(1001, 1, JAN_2026)], [])
        assert keys(await all_presses(stores[2])) == [(1001, 1)]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_newer_schema_is_refused(db_url: str) -> None:
    store = await PostgresStore.open(db_url)
    await store.close()
    async with sql(db_url) as conn:
        await conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    with pytest.raises(SchemaError, match="999"):
        await PostgresStore.open(db_url)


# --- streaming ---------------------------------------------------------------------------


async def test_streams_50k_presses_in_constant_memory(pg: PostgresStore) -> None:
    total = 50_000
    rows = [press(1001 + s % 5, s, JAN_2026 + s * 37, 1 + s % 4) for s in range(total)]
    for i in range(0, total, 5000):
        await pg.write(rows[i : i + 5000], [])
    tracemalloc.start()
    try:
        count, last, peak = 0, (0, 0, 0), 0
        async for p in pg.presses(None, None):
            here = (p.occurred_at, p.terminal_id, p.seq)
            assert here > last
            last, count = here, count + 1
            if count % 5000 == 0:
                peak = max(peak, tracemalloc.get_traced_memory()[1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == total
    # 50,000 StoredPress held at once would take well over 10 MB; a chunk, well under.
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB while streaming"
    # stopping early gives the connection back; the store goes on working
    stream = pg.presses(JAN_2026, None)
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert first.seq == 0
    await pg.write([press(1001, total, JAN_2026)], [])


# --- outages and errors --------------------------------------------------------------------


async def wait_for_lock_wait(url: str, timeout: float = 10.0) -> None:
    async with sql(url) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'smiley-gateway' AND wait_event_type = 'Lock'"
            )
            if waiting:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("the write never reached its lock wait")


async def test_server_stopped_during_a_write_then_back() -> None:
    try:
        own = PrivateCluster.create()
        own.start()
    except ClusterUnavailable as exc:
        pytest.skip(f"no private PostgreSQL cluster can be made here: {exc}")
    try:
        url = own.url()
        store = await PostgresStore.open(url)
        try:
            await store.write([press(1001, 0, JAN_2026)], [])
            # Hold the store's write in mid-transaction: another session locks press_key.
            blocker = await asyncpg.connect(url)
            await blocker.execute("BEGIN; LOCK TABLE press_key IN ACCESS EXCLUSIVE MODE")
            batch = [press(1001, s, JAN_2026 + s) for s in range(1, 500)]
            write = asyncio.create_task(store.write(batch, [reject("gw:1", 5)]))
            await wait_for_lock_wait(url)
            await own.astop("fast")  # ends every session, ours in the middle of its write
            with pytest.raises(StoreError):
                await asyncio.wait_for(write, 30)
            blocker.terminate()
            with pytest.raises(StoreError):  # down: refused, promptly
                await asyncio.wait_for(store.write(batch, []), 30)
            await own.astart()
            await store.write(batch, [reject("gw:1", 5)])  # the first write after restart works
            await store.write(batch, [reject("gw:1", 5)])
            stored = await all_presses(store)
            assert keys(stored) == [(1001, s) for s in range(500)]
            assert [r.uid for r in await all_rejects(store)] == ["gw:1"]
        finally:
            await store.close()
    finally:
        own.destroy()


async def test_unreachable_server_is_a_store_error() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(StoreError, match="nowhere"):
        await PostgresStore.open(url)
    lazy = await PostgresStore.open(url, lazy=True)  # a gateway can start without its store
    try:
        with pytest.raises(StoreError):
            await lazy.write([press(1001, 1, JAN_2026)], [])
        with pytest.raises(StoreError):
            await all_presses(lazy)
    finally:
        await lazy.close()


async def test_tls_as_the_url_asks(cluster: PrivateCluster, db_url: str, tmp_path: Path) -> None:
    cert = cluster.root / "server.crt"
    database = db_url.rsplit("/", 1)[1]

    async def ssl_in_use(url: str) -> list[bool]:
        store = await PostgresStore.open(url)
        try:
            await store.write([press(1001, 1, JAN_2026)], [])
            async with sql(cluster.url()) as conn:
                rows = await conn.fetch(
                    "SELECT s.ssl FROM pg_stat_ssl AS s JOIN pg_stat_activity AS a USING (pid)"
                    " WHERE a.application_name = 'smiley-gateway' AND a.datname = $1",
                    database,
                )
            return [r[0] for r in rows]
        finally:
            await store.close()

    assert await ssl_in_use(
        cluster.url(database, sslmode="verify-full", sslrootcert=str(cert))
    ) == [True]
    assert await ssl_in_use(cluster.url(database, sslmode="require")) == [True]
    assert await ssl_in_use(cluster.url(database, sslmode="disable")) == [False]
    # a certificate this client does not trust is refused
    other_cert, other_key = tmp_path / "other.crt", tmp_path / "other.key"
    openssl = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=not-the-ca", "-keyout", str(other_key), "-out", str(other_cert),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await openssl.wait() == 0
    with pytest.raises(StoreError, match=r"(?i)certificate"):
        await PostgresStore.open(
            cluster.url(database, sslmode="verify-ca", sslrootcert=str(other_cert))
        )


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://smiley@db.example:5432/central",
        "postgres://smiley:secret@10.1.2.3/central?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        "postgresql://smiley@[::1]:6432/central",
    ],
)
def test_config_accepts_postgres_urls(tmp_path: Path, url: str) -> None:
    assert load_config(None, env={"SMILEY_STORE_URL": url}).store_url() == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://x/y", "expected sqlite"),
        ("postgresql://smiley@db:99999/central", "bad port"),
        ("postgresql://smiley@db:5432", "database name is missing"),
        ("postgresql://smiley@db:5432/", "database name is missing"),
    ],
)
def test_config_rejects_bad_store_urls(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        load_config(None, env={"SMILEY_STORE_URL": url})
    assert caught.value.key == "store.url"


# --- end to end ------------------------------------------------------------------------------


async def test_gateway_forwards_tcp_presses_into_postgres_once(
    make_harness: Callable[..., GatewayHarness], db_url: str
) -> None:
    h = make_harness()
    text = h.config_path.read_text(encoding="utf-8")
    assert 'url = "sqlite:///var/central.db"' in text
    h.config_path.write_text(
        text.replace('url = "sqlite:///var/central.db"', f'url = "{db_url}"'), encoding="utf-8"
    )
    gateway = await h.start()
    assert isinstance(gateway.store, PostgresStore)
    for _ in range(2):  # two connections, each sending the same frame twice
        t = await RawTerminal.connect(h.port)
        await t.send(VECTOR_HEX["hello"])
        assert isinstance(await t.receive(), Welcome)
        for _ in range(2):
            await t.send(VECTOR_HEX["presses"])
            answer = await t.receive()
            assert isinstance(answer, Ack)
            assert answer.acked_seq == 122
        await t.close()
    await h.forwarded()
    rows = await all_presses(gateway.store)
    assert [(p.terminal_id, p.seq, p.button) for p in rows] == [
        (1001, 120, 4), (1001, 121, 3), (1001, 122, 1),
    ]  # fmt: skip
    assert rows[0].local_time == "2026-01-01T02:00:05+02:00"
    await h.stop()
    await h.start()  # a second start: no migration to run, registry unchanged
    await h.stop()
    async with sql(db_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM press") == 3
        assert Counter(
            {(r[0], r[1]): r[2] for r in await conn.fetch(
                "SELECT survey, location, sum(presses) FROM press_hourly GROUP BY 1, 2")}
        ) == Counter({(100, 11): 3})  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM terminal") == 2


async def test_gateway_starts_and_acks_while_postgres_is_down(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    url = await new_database(cluster)
    await cluster.astop()
    harness = GatewayHarness(tmp_path)
    harness.config_path.write_text(
        harness.config_path.read_text().replace(
            'url = "sqlite:///var/central.db"', f'url = "{url}"'
        ),
        encoding="utf-8",
    )
    try:
        gateway = await harness.start()  # the store is down: start anyway
        assert not gateway.registry_in_store
        t, _ = await hello(harness)
        await t.send(VECTOR_HEX["presses"])
        assert (await t.receive()).acked_seq == 122  # durable in the outbox
        await t.close()
    finally:
        await cluster.astart()
    async with asyncio.timeout(60):  # the registry import and the forwarding catch up
        while not gateway.registry_in_store or (await gateway.outbox.backlog()).presses:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    assert [p.seq async for p in gateway.store.presses(None, None)] == [120, 121, 122]
    await harness.stop()


async def test_edge_gateway_takes_its_registry_from_the_store_and_its_cache(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    url = await new_database(cluster)
    central = await PostgresStore.open(url)
    await central.import_registry(parse_registry(tomllib.loads(REGISTRY_TOML)))
    await central.close()
    harness = GatewayHarness(tmp_path)
    harness.config_path.write_text(
        harness.config_path.read_text()
        .replace('registry = "terminals.toml"\n', "")
        .replace('url = "sqlite:///var/central.db"', f'url = "{url}"'),
        encoding="utf-8",
    )
    gateway = await harness.start()  # no registry file: the store's registry
    assert set(gateway.registry.terminals) == {1001, 1002}
    assert (tmp_path / "var" / "registry-cache.json").exists()
    await harness.stop()
    await cluster.astop()
    try:
        gateway = await harness.start()  # the store is down: the cached copy
        assert set(gateway.registry.terminals) == {1001, 1002}
        t, _ = await hello(harness)
        await t.send(VECTOR_HEX["presses"])
        assert (await t.receive()).acked_seq == 122
        await t.close()
    finally:
        await cluster.astart()
    await harness.stop()


async def test_a_web_press_keeps_its_ui_and_a_terminal_press_has_none(
    any_store: CentralStore,
) -> None:
    web = press(5001, 0, JAN_2026, 2, transport="web")._replace(ui="email")
    await any_store.write([press(1001, 1, JAN_2026), web, web], [])
    stored = await all_presses(any_store)
    assert [(p.terminal_id, p.transport, p.ui) for p in stored] == [
        (1001, "tcp", ""), (5001, "web", "email"),
    ]  # fmt: skip
