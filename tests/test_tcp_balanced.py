"""TCP behind a load balancer (#21.2): a terminal moving between instances that share a store.

WELCOME's next_seq is the larger of the outbox's and the central store's, so it
never goes back when a terminal reaches an instance that never saw it; a frame
sent to one instance and again to another is stored once. When the store does
not answer in time the outbox's value is taken and the HELLO is not held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import structlog

from firmware_sim.harness import GatewayProcess, PrivateCluster, free_port
from gateway.intake.store_seq import StoreSeq
from gateway.stores import open_reader, open_store
from protocols.frames import Ack, Hello, Presses, PressRecord, Welcome
from tests.conftest import GatewayHarness
from tests.pg import started_cluster
from tests.support import RawTerminal, write_config

T0 = 1_767_225_600
SQLITE_URL_LINE = 'url = "sqlite:///var/central.db"'


def presses(first: int, count: int) -> Presses:
    records = tuple(PressRecord(first + i, T0 + first + i, 1 + i % 4, 0) for i in range(count))
    return Presses(1001, T0 + first + count, first, 0, records)


class SharedStore:
    """The one central store both instances write: a SQLite file or a PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def keys(self) -> Counter[tuple[int, int]]:
        if self.url.startswith("sqlite:///"):
            with contextlib.closing(
                sqlite3.connect(self.url[len("sqlite://") :], timeout=10)
            ) as db:
                return Counter(db.execute("SELECT terminal_id, seq FROM press").fetchall())
        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch("SELECT terminal_id, seq FROM press")
        finally:
            await conn.close()
        return Counter((r["terminal_id"], r["seq"]) for r in rows)

    async def holds(self, seqs: range, timeout: float = 30) -> None:
        """Poll until the store holds terminal 1001's ``seqs`` (the forwarder moved them)."""
        deadline = time.monotonic() + timeout
        wanted = {(1001, s) for s in seqs}
        while not wanted <= set(await self.keys()):
            assert time.monotonic() < deadline, f"the store never got {seqs}"
            await asyncio.sleep(0.05)


async def visit(port: int, boot: int) -> tuple[RawTerminal, int]:
    """Connect and HELLO as terminal 1001 after a reboot (``boot``); the WELCOME's next_seq."""
    terminal = await RawTerminal.connect(port)
    await terminal.send_frame(Hello(1001, 0x0102, boot, T0 + boot, 0, 0))
    welcome = await terminal.receive(timeout=10)
    assert isinstance(welcome, Welcome)
    return terminal, welcome.next_seq


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    yield from started_cluster()


_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
async def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> SharedStore:
    if request.param == "sqlite":
        return SharedStore(f"sqlite:///{tmp_path / 'central.db'}")
    cluster: PrivateCluster = request.getfixturevalue("cluster")
    name = f"balanced{next(_databases)}"
    conn = await asyncpg.connect(cluster.url())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return SharedStore(cluster.url(name))


@pytest.fixture
async def two_instances(
    tmp_path: Path, shared_store: SharedStore
) -> AsyncIterator[tuple[list[GatewayProcess], SharedStore]]:
    """Two gateway processes, each with its own outbox, writing one central store."""
    instances = []
    for name in ("a", "b"):
        port = free_port()
        config = write_config(tmp_path / name, port=port)
        text = config.read_text(encoding="utf-8")
        assert SQLITE_URL_LINE in text
        config.write_text(text.replace(SQLITE_URL_LINE, f'url = "{shared_store.url}"'), "utf-8")
        instances.append(GatewayProcess(config, port))
    try:
        for instance in instances:  # one at a time: the first creates the store's schema
            await instance.start()
        yield instances, shared_store
    finally:
        for instance in instances:
            if instance.alive:
                assert await instance.terminate() == 0


async def test_next_seq_never_goes_back_as_a_terminal_moves_between_instances(
    two_instances: tuple[list[GatewayProcess], SharedStore],
) -> None:
    (a, b), store = two_instances
    seen = []
    first = 0
    # a, b, a, b, b, a: each visit sends 25 records, the last one again to the next instance
    for boot, instance in enumerate((a, b, a, b, b, a), start=1):
        terminal, next_seq = await visit(instance.port, boot)
        seen.append(next_seq)
        # A terminal that lost its counter numbers from next_seq: it must be past
        # every seq any instance stored, or its new presses would be taken as repeats.
        assert next_seq == first, f"visit {boot}: next_seq {next_seq}, expected {first}"
        frame = presses(first, 25)
        await terminal.send_frame(frame)
        answer = await terminal.receive(timeout=10)
        assert isinstance(answer, Ack)
        assert answer.acked_seq == frame.last_seq
        await terminal.close()
        await store.holds(range(first, first + 25))
        first += 25
    assert seen == sorted(seen)
    keys = await store.keys()
    assert [k for k, n in keys.items() if n > 1] == []
    assert set(keys) == {(1001, s) for s in range(first)}


async def test_a_frame_resent_to_another_instance_is_stored_once(
    two_instances: tuple[list[GatewayProcess], SharedStore],
) -> None:
    (a, b), store = two_instances
    terminal, next_seq = await visit(a.port, 1)
    assert next_seq == 0
    frame = presses(0, 40)
    await terminal.send_frame(frame)
    assert isinstance(await terminal.receive(timeout=10), Ack)
    await terminal.close()  # the ACK taken as lost: the terminal sends the frame again to b
    terminal, next_seq = await visit(b.port, 2)
    await terminal.send_frame(frame)
    assert isinstance(await terminal.receive(timeout=10), Ack)
    await terminal.close()
    await store.holds(range(40))
    terminal, next_seq = await visit(b.port, 3)
    assert next_seq == 40
    await terminal.close()
    keys = await store.keys()
    assert keys == Counter({(1001, s): 1 for s in range(40)})


async def stalled_server() -> tuple[asyncio.Server, int]:
    """A socket that accepts and never answers: a database host that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_store_that_does_not_answer_is_not_waited_for(tmp_path: Path) -> None:
    server, port = await stalled_server()
    url = f"postgresql://smiley@127.0.0.1:{port}/smiley"
    store_seq = StoreSeq(lambda: open_reader(url), timeout_s=0.3, retry_s=60)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await store_seq.highest(1001) is None
            assert await store_seq.highest(1002) is None  # within retry_s: not asked
    finally:
        await store_seq.close()
        server.close()
    assert store_seq.unavailable == 2
    assert [e["event"] for e in logs] == ["store_seq_unavailable"]
    assert logs[0]["terminal_id"] == 1001  # the second HELLO did not try (nor wait) again


async def test_a_store_that_is_down_leaves_welcome_to_the_outbox(tmp_path: Path) -> None:
    closed_port = free_port()  # nothing listens: connection refused
    harness = GatewayHarness(tmp_path)
    text = harness.config_path.read_text(encoding="utf-8")
    harness.config_path.write_text(
        text.replace(SQLITE_URL_LINE, f'url = "postgresql://smiley@127.0.0.1:{closed_port}/x"'),
        encoding="utf-8",
    )
    await harness.start()
    try:
        terminal, next_seq = await visit(harness.port, 1)
        assert next_seq == 0
        await terminal.send_frame(presses(0, 5))
        assert isinstance(await terminal.receive(timeout=10), Ack)
        await terminal.close()
        terminal, next_seq = await visit(harness.port, 2)
        assert next_seq == 5  # the outbox's, the store still being down
        await terminal.close()
        assert harness.gateway is not None
        assert harness.gateway.store_seq.unavailable == 2
    finally:
        await harness.stop()


async def test_the_store_is_asked_again_once_the_retry_interval_passed(tmp_path: Path) -> None:
    path = tmp_path / "central.db"
    url = f"sqlite:///{path}"
    store_seq = StoreSeq(lambda: open_reader(url), timeout_s=2, retry_s=0)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await store_seq.highest(1001) is None  # no schema yet: a StoreError
            store = await open_store(url)  # the store is made, empty
            await store.close()
            assert await store_seq.highest(1001) is None  # answered: it holds nothing
    finally:
        await store_seq.close()
    assert store_seq.unavailable == 1
    assert [e["event"] for e in logs] == ["store_seq_unavailable"]
    assert "press" in logs[0]["error"]
