"""PostgreSQL outages under load: stopped, full outbox, several gateways, cut connections.

One private cluster serves the module (never the shared server on 5432), one
database per test. Every test ends by comparing the database with what the
terminals were ACKed: each ACKed press exactly once, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import asyncpg
import pytest

from firmware_sim import BackoffOptions, Fleet, FleetOptions, LinkOptions, MadePress, Steady
from firmware_sim import load_registry as load_sim_registry
from firmware_sim.harness import GatewayProcess, PrivateCluster, free_port
from gateway.app import Gateway
from gateway.stores.postgres import PostgresStore
from protocols.constants import NakCode
from protocols.frames import Ack, Nak, Presses, PressRecord
from tests.conftest import GatewayHarness
from tests.pg import started_cluster
from tests.support import write_config
from tests.test_tcp import hello

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_REGISTRY = (REPO / "deploy" / "terminals.example.toml").read_text(encoding="utf-8")
SQLITE_URL_LINE = 'url = "sqlite:///var/central.db"'
JAN_2026 = 1767225600
Key = tuple[int, int]


# --- cluster, databases, configuration -------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    yield from started_cluster()


_databases = itertools.count()


@pytest.fixture
async def db_url(cluster: PrivateCluster) -> str:
    """A new database; the cluster is started first if an earlier test left it stopped."""
    if not cluster.running:
        await cluster.astart()
    name = f"outage{next(_databases)}"
    conn = await asyncpg.connect(cluster.url())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return cluster.url(name)


def use_postgres(config: Path, url: str, *, gateway: str = "", store: str = "") -> None:
    """Point a config from write_config at ``url``, with extra [gateway] and [store] keys."""
    text = config.read_text(encoding="utf-8")
    assert SQLITE_URL_LINE in text
    text = text.replace(SQLITE_URL_LINE, f'url = "{url}"\n{store}')
    text = text.replace("[gateway]\n", f"[gateway]\n{gateway}\n")
    config.write_text(text, encoding="utf-8")


def link(port: int, max_records: int = 50) -> LinkOptions:
    return LinkOptions("127.0.0.1", port, window=4, max_records=max_records, answer_timeout=20.0)


@contextlib.asynccontextmanager
async def gateway_up(harness: GatewayHarness, cluster: PrivateCluster) -> AsyncIterator[Gateway]:
    """The harness gateway; stopped on the way out, with the cluster up so it can drain."""
    gateway = await harness.start()
    try:
        yield gateway
    finally:
        if not cluster.running:
            await cluster.astart()
        await harness.stop()


async def drained(gateway: Gateway, timeout: float = 30.0) -> None:
    """Poll the outbox until the forwarder has moved everything into the store."""
    deadline = time.monotonic() + timeout
    while True:
        backlog = await gateway.outbox.backlog()
        if backlog.presses == 0 and backlog.rejects == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"outbox not drained in {timeout} s: {backlog},"
                f" last forward error: {gateway.forwarder.last_error}"
            )
        await asyncio.sleep(0.05)


# --- what the database holds ------------------------------------------------------------


async def store_reaches(url: str, presses: int, timeout: float) -> None:
    """Poll the store until it holds ``presses`` presses."""
    deadline = time.monotonic() + timeout
    while True:
        conn = await asyncpg.connect(url)
        try:
            count = await conn.fetchval("SELECT count(*) FROM press")
        finally:
            await conn.close()
        if count >= presses or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)


async def stored_rows(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT terminal_id, seq, button, followup,"
            " extract(epoch FROM occurred_at)::bigint AS ts FROM press"
        )
        keys = await conn.fetchval("SELECT count(*) FROM press_key")
        hourly = await conn.fetchval("SELECT coalesce(sum(presses), 0) FROM press_hourly")
    finally:
        await conn.close()
    assert keys == len(rows), f"press_key has {keys} keys for {len(rows)} presses"
    assert hourly == len(rows), f"press_hourly counts {hourly} presses for {len(rows)}"
    return rows


def assert_exactly_the_acked(rows: list[asyncpg.Record], acked: Mapping[Key, MadePress]) -> None:
    counts = Counter((r["terminal_id"], r["seq"]) for r in rows)
    doubled = [k for k, n in counts.items() if n > 1]
    assert not doubled, f"stored more than once: {sorted(doubled)[:10]} ({len(doubled)})"
    missing = set(acked) - set(counts)
    assert not missing, f"ACKed but not stored: {sorted(missing)[:10]} ({len(missing)})"
    extra = set(counts) - set(acked)
    assert not extra, f"stored but never ACKed: {sorted(extra)[:10]} ({len(extra)})"
    for row in rows:
        made = acked[(row["terminal_id"], row["seq"])]
        assert (row["button"], row["followup"]) == (made.button, made.followup), made
        if not made.unsynced:
            assert row["ts"] == made.ts, made


def acked_of(*fleets: Fleet) -> dict[Key, MadePress]:
    acked: dict[Key, MadePress] = {}
    for fleet in fleets:
        acked.update(fleet.report.acked)
    return acked


# --- 1. the store stopped for the middle of a run ----------------------------------------------


async def test_store_stopped_mid_run_every_acked_press_arrives_once(
    cluster: PrivateCluster, db_url: str, tmp_path: Path
) -> None:
    harness = GatewayHarness(tmp_path, registry=SAMPLE_REGISTRY)
    use_postgres(harness.config_path, db_url, store="retry_max_s = 0.5")
    keys = load_sim_registry(tmp_path / "terminals.toml")
    assert len(keys) == 50
    options = FleetOptions(pattern=Steady(rate=0), seed=31)
    async with gateway_up(harness, cluster) as gateway:
        assert isinstance(gateway.store, PostgresStore)
        async with Fleet(keys, link(harness.port), options) as fleet:
            run = asyncio.create_task(fleet.run(presses=50_000))
            await fleet.wait_acked(15_000, timeout=60)
            await cluster.astop("fast")
            acked_at_stop = fleet.report.acked_count
            failures_at_stop = gateway.forwarder.failures
            await fleet.wait_acked(35_000, timeout=60)
            # 20,000 presses take well under a second: wait for the forwarder to
            # have met the outage too, rather than hoping it already has.
            async with asyncio.timeout(30):
                while gateway.forwarder.failures == failures_at_stop:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            acked_while_down = fleet.report.acked_count - acked_at_stop
            backlog_while_down = await gateway.outbox.backlog()
            failures_while_down = gateway.forwarder.failures - failures_at_stop
            await cluster.astart()
            await run
            await fleet.wait_all_acked(timeout=60)
        await drained(gateway)
    assert fleet.report.acked_count == 50_000
    # the outage really was in the middle: ACKs went on, into the outbox only
    assert acked_while_down >= 5_000, acked_while_down
    assert backlog_while_down.presses >= acked_while_down, backlog_while_down
    assert failures_while_down > 0
    rows = await stored_rows(db_url)
    assert len(rows) == 50_000
    assert_exactly_the_acked(rows, fleet.report.acked)


# --- 3. the outbox at its budget while the store is down ---------------------------------------


def presses_frame(first: int) -> Presses:
    records = tuple(
        PressRecord(first + i, JAN_2026 + first + i, 1 + i % 4, i % 3) for i in range(680)
    )
    return Presses(1001, JAN_2026 + first + 700, first, 0, records)


async def test_outbox_full_while_store_down_busy_then_everything_arrives_once(
    cluster: PrivateCluster, db_url: str, tmp_path: Path
) -> None:
    harness = GatewayHarness(tmp_path)
    use_postgres(
        harness.config_path, db_url, gateway="outbox_max_mb = 1", store="retry_max_s = 0.5"
    )
    async with gateway_up(harness, cluster) as gateway:
        await cluster.astop("fast")
        t, welcome = await hello(harness)
        assert welcome.next_seq == 0
        acked: list[int] = []
        busy_frame: Presses | None = None
        for n in range(200):
            frame = presses_frame(n * 680)
            await t.send_frame(frame)
            answer = await t.receive(timeout=30)
            if isinstance(answer, Nak):
                assert answer == Nak(1001, NakCode.BUSY, frame.first_seq)
                busy_frame = frame
                break
            assert isinstance(answer, Ack), answer
            assert answer.acked_seq == frame.last_seq
            acked.extend(r.seq for r in frame.records)
        assert busy_frame is not None, "the outbox never reached its budget"
        assert len(acked) >= 2 * 680
        # nothing ACKed is lost: all of it waits in the outbox, none reached the store
        backlog = await gateway.outbox.backlog()
        assert backlog.presses == len(acked)
        # On a fast disk the budget is reached before the forwarder has tried the
        # stopped store once: wait for it to have met the outage, not assume it.
        async with asyncio.timeout(30):
            while gateway.forwarder.failures == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        # still down, still full: a resend is refused again
        await t.send_frame(busy_frame)
        assert await t.receive(timeout=30) == Nak(1001, NakCode.BUSY, busy_frame.first_seq)

        await cluster.astart()
        answer = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the terminal retries after BUSY, as the spec says
            await t.send_frame(busy_frame)
            answer = await t.receive(timeout=30)
            if isinstance(answer, Ack):
                break
            assert answer == Nak(1001, NakCode.BUSY, busy_frame.first_seq)
            await asyncio.sleep(0.1)
        assert isinstance(answer, Ack), "the BUSY frame was never ACKed after the store came back"
        assert answer.acked_seq == busy_frame.last_seq
        await t.close()
        await drained(gateway)
    expected = acked + [r.seq for r in busy_frame.records]
    rows = await stored_rows(db_url)
    counts = Counter((r["terminal_id"], r["seq"]) for r in rows)
    assert [k for k, n in counts.items() if n > 1] == []
    assert sorted(counts) == [(1001, s) for s in sorted(expected)]
    assert {(r["seq"], r["button"], r["followup"]) for r in rows} == {
        (s, 1 + (s % 680) % 4, (s % 680) % 3) for s in expected
    }


# --- 2. three gateway processes into one database --------------------------------------------


def registry_subset(first: int, last: int) -> str:
    """The sample registry with only terminals ``first``..``last``."""
    head, *blocks = SAMPLE_REGISTRY.split("[[terminal]]")
    chosen = [b for b in blocks if first <= int(b.split("id = ", 1)[1].split("\n", 1)[0]) <= last]
    assert len(chosen) == last - first + 1
    return head + "".join("[[terminal]]" + b for b in chosen)


def log_problems(log: Path) -> list[str]:
    """Log lines that are not JSON at warning level or below, or that report a failure."""
    problems = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(line)
            continue
        if entry.get("level") not in ("debug", "info", "warning") or entry.get("event") in (
            "forward_failed",
            "shutdown_left_backlog",
            "outbox_commit_failed",
        ):
            problems.append(line)
    return problems


async def test_three_gateway_processes_forward_into_one_database_exactly_once(
    db_url: str, tmp_path: Path
) -> None:
    ranges = [(1001, 1016), (1017, 1033), (1034, 1050)]
    gateways: list[GatewayProcess] = []
    for n, (first, last) in enumerate(ranges):
        directory = tmp_path / f"gw{n}"
        directory.mkdir()
        port = free_port()
        config = write_config(directory, port=port, registry=registry_subset(first, last))
        use_postgres(config, db_url, store="retry_max_s = 0.5\nforward_batch = 500")
        gateways.append(GatewayProcess(config, port))
    try:
        await asyncio.gather(*(g.start() for g in gateways))
        async with contextlib.AsyncExitStack() as stack:
            fleets = []
            for n, g in enumerate(gateways):
                keys = load_sim_registry(g.config.parent / "terminals.toml")
                options = FleetOptions(pattern=Steady(rate=0), seed=40 + n, name=f"fleet{n}")
                fleets.append(await stack.enter_async_context(Fleet(keys, link(g.port), options)))
            await asyncio.gather(*(f.run(presses=5_000) for f in fleets))
            await asyncio.gather(*(f.wait_all_acked(timeout=60) for f in fleets))
        # Stop once the store has everything: the drain at SIGTERM has a budget of
        # seconds, which a machine as busy as CI's may spend before it is done (the
        # rows would wait for the next start, logged as shutdown_left_backlog).
        await store_reaches(db_url, 15_000, timeout=60)
    finally:
        codes = await asyncio.gather(
            *(g.terminate() for g in gateways if g.process and g.process.returncode is None)
        )
    assert codes == [0, 0, 0]
    for n, g in enumerate(gateways):
        problems = log_problems(g.log)
        assert not problems, f"gateway {n} logged: {problems[:5]}"
    assert [f.report.acked_count for f in fleets] == [5_000] * 3
    # each gateway forwarded its own terminals' presses
    for fleet, (first, last) in zip(fleets, ranges, strict=True):
        assert {tid for tid, _ in fleet.report.acked} == set(range(first, last + 1))
    rows = await stored_rows(db_url)
    assert len(rows) == 15_000
    assert_exactly_the_acked(rows, acked_of(*fleets))


# --- 4. the forwarder's connections cut mid-transaction --------------------------------------


async def terminate_gateway_backends(
    cluster: PrivateCluster, database: str, stop: asyncio.Event
) -> Counter[str]:
    """Until ``stop``: terminate every gateway backend that is busy in a transaction."""
    killed: Counter[str] = Counter()
    conn = await asyncpg.connect(cluster.url())
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT state, pg_terminate_backend(pid) AS done FROM pg_stat_activity"
                " WHERE application_name = 'smiley-gateway' AND datname = $1"
                " AND xact_start IS NOT NULL AND state <> 'idle' AND pid <> pg_backend_pid()",
                database,
            )
            killed.update(r["state"] for r in rows if r["done"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.005)
    finally:
        await conn.close()
    return killed


async def cut_writes_at_a_lock(
    cluster: PrivateCluster, url: str, gateway: Gateway, rounds: int
) -> int:
    """Hold each of ``rounds`` forwarder writes mid-transaction, then terminate its backend.

    Another session locks press_key, so the write waits inside its transaction
    (its rows already copied into the staging table); it is terminated there.
    Between rounds the forwarder must have moved rows again.
    """
    database = url.rsplit("/", 1)[1]
    blocker = await asyncpg.connect(url)
    admin = await asyncpg.connect(cluster.url())
    cut = 0
    try:
        for _ in range(rounds):
            forwarded = gateway.forwarder.forwarded
            async with blocker.transaction():
                await blocker.execute("LOCK TABLE press_key IN ACCESS EXCLUSIVE MODE")
                deadline = time.monotonic() + 10
                pid = None
                while pid is None:
                    assert time.monotonic() < deadline, "no forwarder write reached the lock"
                    pid = await admin.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE application_name ="
                        " 'smiley-gateway' AND datname = $1 AND wait_event_type = 'Lock'"
                        " AND xact_start IS NOT NULL",
                        database,
                    )
                    if pid is None:
                        await asyncio.sleep(0.01)
                cut += bool(await admin.fetchval("SELECT pg_terminate_backend($1)", pid))
            deadline = time.monotonic() + 10
            while gateway.forwarder.forwarded == forwarded:
                assert time.monotonic() < deadline, "the forwarder did not recover from the cut"
                await asyncio.sleep(0.01)
    finally:
        await asyncio.gather(blocker.close(), admin.close())
    return cut


async def test_connections_terminated_mid_transaction_then_recovered_exactly_once(
    cluster: PrivateCluster, db_url: str, tmp_path: Path
) -> None:
    harness = GatewayHarness(tmp_path, registry=SAMPLE_REGISTRY)
    use_postgres(harness.config_path, db_url, store="retry_max_s = 0.2\nforward_batch = 200")
    keys = load_sim_registry(tmp_path / "terminals.toml")
    # about 2,500 presses a second: some 6 s of writes to cut into
    options = FleetOptions(pattern=Steady(rate=50), seed=51)
    database = db_url.rsplit("/", 1)[1]
    async with gateway_up(harness, cluster) as gateway:
        async with Fleet(keys, link(harness.port), options) as fleet:
            run = asyncio.create_task(fleet.run(presses=15_000))
            await fleet.wait_acked(500, timeout=30)
            # first, five writes cut for certain while they wait inside their transaction
            cut = await cut_writes_at_a_lock(cluster, db_url, gateway, rounds=5)
            failures_after_cuts = gateway.forwarder.failures
            # then, for the rest of the run, any write caught in a transaction
            stop = asyncio.Event()
            killer = asyncio.create_task(terminate_gateway_backends(cluster, database, stop))
            try:
                await run
                await fleet.wait_all_acked(timeout=60)
            finally:
                stop.set()
                killed = await killer
            # A write cut in its transaction fails in the forwarder a moment later:
            # wait for that, rather than read the count while it may be on its way.
            deadline = time.monotonic() + 10
            while gateway.forwarder.failures == failures_after_cuts and killed.total() > 0:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        failures = gateway.forwarder.failures
        await drained(gateway)
    assert cut == 5
    assert failures_after_cuts >= 5, failures_after_cuts
    # (a cut that lands after the server sent COMMIT's reply fails nothing: not >= killed)
    assert sum(killed.values()) > 0, killed
    assert failures > failures_after_cuts, (killed, failures)
    assert fleet.report.acked_count == 15_000
    rows = await stored_rows(db_url)
    assert len(rows) == 15_000
    assert_exactly_the_acked(rows, fleet.report.acked)


# --- 5. the forwarder's process killed with -9 mid-batch -----------------------------------------


async def hold_a_write_at_a_lock_and_kill(
    cluster: PrivateCluster, url: str, gateway: GatewayProcess
) -> int:
    """Kill -9 the gateway while its forwarder waits inside a write transaction.

    Another session locks press_key, so the forwarder's write waits inside its
    transaction (its rows already copied into the staging table); the gateway
    process is killed there, and only then is the lock released. Returns the
    pid of the backend that was caught mid-batch, after it has ended.
    """
    database = url.rsplit("/", 1)[1]
    blocker = await asyncpg.connect(url)
    admin = await asyncpg.connect(cluster.url())
    try:
        deadline = time.monotonic() + 30
        while not await blocker.fetchval(
            "SELECT to_regclass('press_key') IS NOT NULL AND EXISTS (SELECT FROM press_key)"
        ):
            assert time.monotonic() < deadline, "the forwarder never wrote a batch"
            await asyncio.sleep(0.05)
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE press_key IN ACCESS EXCLUSIVE MODE")
            deadline = time.monotonic() + 10
            pid = None
            while pid is None:
                assert time.monotonic() < deadline, "no forwarder write reached the lock"
                pid = await admin.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE application_name ="
                    " 'smiley-gateway' AND datname = $1 AND wait_event_type = 'Lock'"
                    " AND xact_start IS NOT NULL",
                    database,
                )
                if pid is None:
                    await asyncio.sleep(0.01)
            await gateway.kill()
            # the backend still waits in its transaction: its client is gone, not the server's work
            assert (
                await admin.fetchval(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
                )
                == "Lock"
            )
        # the lock released, the backend runs its statement, finds no client and rolls back
        deadline = time.monotonic() + 30
        while await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            assert time.monotonic() < deadline, "the killed gateway's backend lived on"
            await asyncio.sleep(0.02)
    finally:
        await asyncio.gather(blocker.close(), admin.close())
    return int(pid)


async def test_forwarder_killed_with_9_mid_batch_then_restarted_exactly_once(
    cluster: PrivateCluster, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port, registry=SAMPLE_REGISTRY)
    use_postgres(config, db_url, store="retry_max_s = 0.2\nforward_batch = 200")
    gateway = GatewayProcess(config, port)
    keys = load_sim_registry(tmp_path / "terminals.toml")
    # about 2,500 presses a second: the fleet goes on through the kill and the restart
    options = FleetOptions(pattern=Steady(rate=50), seed=61)
    fleet_link = LinkOptions(
        "127.0.0.1",
        port,
        window=4,
        max_records=50,
        answer_timeout=20.0,
        reconnect=BackoffOptions(initial=0.05, maximum=0.5),
    )
    await gateway.start()
    try:
        async with Fleet(keys, fleet_link, options) as fleet:
            run = asyncio.create_task(fleet.run(presses=15_000))
            await fleet.wait_acked(1_000, timeout=60)
            await hold_a_write_at_a_lock_and_kill(cluster, db_url, gateway)
            acked_at_kill = set(fleet.report.acked)
            await gateway.start()
            await run
            await fleet.wait_all_acked(timeout=120)
    finally:
        code = None
        if gateway.process is not None and gateway.process.returncode is None:
            code = await gateway.terminate()  # drains the outbox into the store
    assert code == 0
    assert fleet.report.acked_count == 15_000
    # the kill really came mid-run: presses were ACKed before it and after the restart
    assert 1_000 <= len(acked_at_kill) < 15_000, len(acked_at_kill)
    problems = log_problems(gateway.log)
    assert not problems, f"gateway logged: {problems[:5]}"
    rows = await stored_rows(db_url)
    assert len(rows) == 15_000
    assert_exactly_the_acked(rows, fleet.report.acked)
