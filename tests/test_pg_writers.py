"""Several gateways writing one PostgreSQL store at once, and reading what the others changed.

Issue #21, points 3 and 4: writers no longer take turns under one lock, so the
guarantees are checked with writers truly at once on one private cluster:
nothing doubled, misuse flags as one writer gives them (the greedy walk,
whatever the arrival order), rollups equal to a recount from press, and no
deadlock (one would fail a write). Then: a token or registry change made
through one API instance is seen by another within its ``[api] refresh_s``.
"""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from firmware_sim.harness import PrivateCluster
from gateway.api.app import create_app
from gateway.api.db import Reader, open_reader
from gateway.api.tokens import create_token, revoke_token
from gateway.registry.terminals import parse_registry
from gateway.rows import HourCountRow, PressRow
from gateway.stores import StoredPress
from gateway.stores.postgres import PostgresStore
from tests.pg import started_cluster
from tests.support import REGISTRY_TOML
from tests.test_postgres_store import (
    DAY,
    JAN_2026,
    REGISTRY,
    all_presses,
    all_rejects,
    greedy_flags,
    new_database,
    press,
    press_grouped_by_hour,
    reject,
    rollup,
    sql,
    survey_rollup,
    survey_totals,
    wait_for_lock_wait,
)

pytestmark = pytest.mark.timeout(180)

MISUSE_S = 5  # survey 100 of REGISTRY_TOML
WAITING = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = 'smiley-gateway' AND wait_event_type = 'Lock'"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    yield from started_cluster()


# --- the backlog ---------------------------------------------------------------------------


def backlog() -> tuple[dict[int, list[tuple[int, int]]], list[PressRow]]:
    """Presses as outboxes hold them after an outage: 1001 and 1002 (survey 100,
    often within 5 s of each other), 4242 (unregistered) and 20 more unregistered
    terminals over six months (so writers race to make the same partitions)."""
    rng = random.Random(2121)
    times: dict[int, list[tuple[int, int]]] = {}
    rows = []
    for terminal_id, gaps in ((1001, (0, 1, 3, 4, 5, 6, 30)), (1002, (2, 5, 6, 60, 700))):
        at = JAN_2026
        times[terminal_id] = []
        for seq in range(600):
            at += rng.choice(gaps)
            times[terminal_id].append((at, seq))
            rows.append(press(terminal_id, seq, at, 1 + seq % 4))
    rows += [press(4242, seq, JAN_2026 + seq, 1) for seq in range(200)]
    rows += [
        press(7000 + t, seq, JAN_2026 + (seq % 6) * 31 * DAY + seq * 7, 1 + t % 4)
        for t in range(20)
        for seq in range(60)
    ]
    rows.sort(key=lambda p: (p.occurred_at, p.terminal_id, p.seq))
    return times, rows


def hour_counts() -> list[HourCountRow]:
    return [
        HourCountRow(1002, JAN_2026 + 3600 * h, 3600, button, h + button, 7, "sms", 1000 * h)
        for h in range(5)
        for button in (1, 2)
    ]


def writer_batches(rows: list[PressRow], writer: int) -> list[list[PressRow]]:
    """The whole backlog in batches, in an order and size of each writer's own:
    in time order, backwards, shuffled, and with runs held back."""
    order = list(rows)
    if writer % 4 == 1:
        order.reverse()
    elif writer % 4 == 2:
        random.Random(writer).shuffle(order)
    elif writer % 4 == 3:
        for i in range(0, len(order) - 90, 131):
            order[i : i + 90] = order[i + 30 : i + 90] + order[i : i + 30]
    size = (200, 150, 97, 300)[writer % 4]
    return [order[i : i + size] for i in range(0, len(order), size)]


def as_kept(stored: list[StoredPress]) -> list[tuple[int, int, int, str, int, bool]]:
    """Presses and hour counts as stored, in one order."""
    return sorted((p.terminal_id, p.seq, p.occurred_at, p.precision, p.count, p.misuse)
                  for p in stored)  # fmt: skip


async def tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Both rollups, checked against a recount from press on the way."""
    by_terminal = await rollup(url)
    assert by_terminal == await press_grouped_by_hour(url)
    by_survey = await survey_rollup(url)
    assert by_survey == survey_totals(by_terminal)
    async with sql(url) as conn:
        hourly = await conn.fetch("SELECT * FROM hourly ORDER BY terminal_id, hour, button")
        assert await conn.fetchval("SELECT count(*) FROM press_default") == 0
    return {"press_hourly": by_terminal, "survey": by_survey, "hourly": [tuple(r) for r in hourly]}


async def single_writer(cluster: PrivateCluster, rows: list[PressRow]) -> tuple[Any, ...]:
    url = await new_database(cluster)
    store = await PostgresStore.open(url)
    try:
        await store.import_registry(REGISTRY)
        for batch in writer_batches(rows, 0):
            await store.write(batch, [])
        await store.write([], [], hour_counts())
        return as_kept(await all_presses(store)), await tables(url)
    finally:
        await store.close()


@pytest.mark.parametrize("writers", [2, 4])
async def test_writers_forwarding_one_backlog_at_once_equal_one_writer(
    cluster: PrivateCluster, writers: int
) -> None:
    times, rows = backlog()
    reference = await single_writer(cluster, rows)
    url = await new_database(cluster)
    stores = await asyncio.gather(*(PostgresStore.open(url) for _ in range(writers)))
    try:
        await stores[0].import_registry(REGISTRY)
        rejects = [reject(f"gw:{n}", JAN_2026 * 1000 + n) for n in range(30)]

        async def forward(store: PostgresStore, writer: int) -> None:
            batches = writer_batches(rows, writer)
            for n, batch in enumerate(batches):  # every writer: the same rejects, hours
                await store.write(batch, rejects[n % 3 :: 3], hour_counts() if n == 2 else ())

        # A deadlock would fail a write (the server ends one of the two): gather raises.
        await asyncio.gather(*(forward(s, w) for w, s in enumerate(stores)))
        stored = [p for p in await all_presses(stores[-1]) if p.precision == "second"]
        assert len(stored) == len(rows)
        assert len({(p.terminal_id, p.seq) for p in stored}) == len(rows)
        for terminal_id in (1001, 1002):
            flags = {p.seq: p.misuse for p in stored if p.terminal_id == terminal_id}
            assert flags == greedy_flags(times[terminal_id], MISUSE_S)
        assert any(p.misuse for p in stored)
        assert not any(p.misuse for p in stored if p.terminal_id >= 4242)
        assert (as_kept(await all_presses(stores[0])), await tables(url)) == reference
        assert sorted(r.uid for r in await all_rejects(stores[0])) == sorted(r.uid for r in rejects)
        async with sql(url) as conn:
            deadlocks = await conn.fetchval(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            )
        assert deadlocks == 0
    finally:
        await asyncio.gather(*(s.close() for s in stores))


@pytest.mark.parametrize("writers", [2, 4])
async def test_a_terminals_presses_split_between_writers_get_the_flags_of_one_walk(
    cluster: PrivateCluster, writers: int
) -> None:
    """Terminals that moved between instances: each writer has its own runs of their
    presses (no key in two writers, so no key to wait on), written at the same
    time. Each walk must see the other writers' presses of its terminal."""
    times, rows = backlog()
    reference = await single_writer(cluster, rows)
    runs = [rows[i : i + 7] for i in range(0, len(rows), 7)]
    shares = [[p for run in runs[w::writers] for p in run] for w in range(writers)]
    url = await new_database(cluster)
    stores = await asyncio.gather(*(PostgresStore.open(url) for _ in range(writers)))
    try:
        await stores[0].import_registry(REGISTRY)

        async def forward(store: PostgresStore, share: list[PressRow]) -> None:
            for i in range(0, len(share), 20):
                await store.write(share[i : i + 20], [])

        await asyncio.gather(*(forward(s, share) for s, share in zip(stores, shares, strict=True)))
        await stores[0].write([], [], hour_counts())
        stored = await all_presses(stores[0])
        for terminal_id in (1001, 1002):
            flags = {p.seq: p.misuse for p in stored if p.terminal_id == terminal_id}
            assert flags == greedy_flags(times[terminal_id], MISUSE_S)
        assert (as_kept(stored), await tables(url)) == reference
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_terminal_held_by_one_writer_does_not_hold_up_another_terminal(
    cluster: PrivateCluster,
) -> None:
    """The write of 1001 waits for the writer that holds 1001; that of 1002, of the
    same survey and hour (so the same survey rollup rows), goes through meanwhile."""
    url = await new_database(cluster)
    a, b = await asyncio.gather(PostgresStore.open(url), PostgresStore.open(url))
    blocker = await asyncpg.connect(url)
    try:
        await a.import_registry(REGISTRY)
        await a.write([press(1001, 0, JAN_2026), press(1002, 0, JAN_2026)], [])
        # Another writer's transaction on 1001, as a write takes it, left open.
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT FROM terminal WHERE id = 1001 FOR NO KEY UPDATE")
        held = asyncio.create_task(a.write([press(1001, s, JAN_2026 + s) for s in (1, 2)], []))
        await wait_for_lock_wait(url)
        await asyncio.wait_for(b.write([press(1002, s, JAN_2026 + s) for s in (1, 2)], []), 30)
        assert not held.done()
        await holding.rollback()
        await asyncio.wait_for(held, 30)
        stored = await all_presses(b)
        assert sorted((p.terminal_id, p.seq, p.misuse) for p in stored) == [
            (1001, 0, False), (1001, 1, True), (1001, 2, True),
            (1002, 0, False), (1002, 1, True), (1002, 2, True),
        ]  # fmt: skip
        await tables(url)
    finally:
        await blocker.close()
        await asyncio.gather(a.close(), b.close())


async def test_two_writes_of_one_terminal_take_turns_so_the_second_walk_sees_the_first(
    cluster: PrivateCluster,
) -> None:
    """Write A of 1001 is held before its commit (at the survey rollup row it needs,
    locked by another session); write B of a press 2 s later on another button (no
    key or rollup row in common) must wait for A and then flag its press."""
    url = await new_database(cluster)
    a, b = await asyncio.gather(PostgresStore.open(url), PostgresStore.open(url))
    blocker = await asyncpg.connect(url)
    try:
        await a.import_registry(REGISTRY)
        await a.write([press(1001, 0, JAN_2026)], [])  # the hour's survey rollup row exists
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("UPDATE press_hourly_survey SET presses = presses WHERE button = 1")
        first = asyncio.create_task(a.write([press(1001, 1, JAN_2026 + 100)], []))
        await wait_for_lock_wait(url)
        second = asyncio.create_task(b.write([press(1001, 2, JAN_2026 + 102, 2)], []))
        async with sql(url) as conn:  # both wait: A at the rollup row, B for A's terminal
            deadline = time.monotonic() + 10
            while await conn.fetchval(WAITING) < 2:
                assert not second.done(), "the second write did not wait for the first"
                assert time.monotonic() < deadline, "the second write never waited"
                await asyncio.sleep(0.02)
        await holding.rollback()
        await asyncio.wait_for(asyncio.gather(first, second), 30)
        flags = {p.seq: p.misuse for p in await all_presses(a)}
        assert flags == {0: False, 1: False, 2: True}
        await tables(url)
    finally:
        await blocker.close()
        await asyncio.gather(a.close(), b.close())


# --- point 4: what another instance changed --------------------------------------------------


@pytest.fixture
async def shared_url(cluster: PrivateCluster) -> str:
    url = await new_database(cluster)
    store = await PostgresStore.open(url)
    try:
        await store.import_registry(REGISTRY)
    finally:
        await store.close()
    return url


@pytest.fixture
async def readers(shared_url: str) -> AsyncIterator[list[Reader]]:
    """Three API instances' own readers of the one store."""
    opened = list(await asyncio.gather(*(open_reader(shared_url) for _ in range(3))))
    yield opened
    await asyncio.gather(*(r.close() for r in opened))


def api_client(reader: Reader, refresh_s: float) -> httpx.AsyncClient:
    app = create_app(reader, (10_000, 1000.0), refresh_s=refresh_s)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def surveys_seen(client: httpx.AsyncClient, token: str) -> set[int] | int:
    """The survey ids the token sees, or the status if it is refused."""
    answer = await client.get("/v2/surveys.json", headers={"X-HON-API-Token": token})
    if answer.status_code != 200:
        return answer.status_code
    return {int(s["surveyId"]) for s in answer.json()}


async def until_seen(client: httpx.AsyncClient, token: str, wanted: set[int] | int) -> None:
    deadline = time.monotonic() + 30  # far beyond refresh_s: only a cache never refreshed fails
    while (seen := await surveys_seen(client, token)) != wanted:
        assert time.monotonic() < deadline, f"still {seen}, not {wanted}"
        await asyncio.sleep(0.05)


SECOND_SURVEY = (
    REGISTRY_TOML
    + """
[[survey]]
id = 200
company = "acme"
question = "Did you find what you were looking for?"
locale = "en-US"
scale = "four"
misuse_interval_s = 0
[[terminal]]
id = 1003
key = "00112233445566778899aabbccddeeff"
location = 11
survey = 200
"""
)


async def test_tokens_and_registry_changes_reach_another_instance_within_refresh_s(
    shared_url: str, readers: list[Reader]
) -> None:
    """Instance A creates a token and revokes it; the registry gains a survey through
    another gateway's store. B (refresh_s 0) sees each at its next request, C
    (0.5 s) within its refresh, D (300 s) keeps what it read until then."""
    a = readers[0]
    info, token = await create_token(a, "acme", None, None, None)
    b, c, d = api_client(readers[0], 0), api_client(readers[1], 0.5), api_client(readers[2], 300)
    async with b, c, d:
        assert await surveys_seen(b, token) == {100}
        await until_seen(c, token, {100})
        assert await surveys_seen(d, token) == {100}
        gateway = await PostgresStore.open(shared_url)
        try:
            await gateway.import_registry(parse_registry(tomllib.loads(SECOND_SURVEY)))
        finally:
            await gateway.close()
        assert await surveys_seen(b, token) == {100, 200}
        await until_seen(c, token, {100, 200})
        assert await surveys_seen(d, token) == {100}  # within its 300 s: the old catalog
        assert await revoke_token(a, info.client_id)
        assert await surveys_seen(b, token) == 401
        await until_seen(c, token, 401)
        assert await surveys_seen(d, token) == {100}  # the revocation too, until 300 s
