"""The durable outbox: group commit, deduplication, and BUSY at the budget."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import OutboxBusy, SchemaError
from gateway.intake.forwarder import Forwarder
from gateway.intake.outbox import Backlog, Outbox
from gateway.intake.outbox_schema import SCHEMA_V1
from gateway.intake.sms_ledger import SmsLedger
from gateway.rows import PressRow
from gateway.stores.sqlite import SqliteStore
from protocols.constants import NakCode
from protocols.frames import Ack, Nak, Presses, PressRecord
from tests.conftest import GatewayHarness
from tests.test_tcp import hello, stored


def press(terminal_id: int, seq: int) -> PressRow:
    return PressRow(terminal_id, seq, 1767225600 + seq, 7200, 1 + seq % 4, 0, False, "tcp", 0)


async def test_commits_share_transactions_and_survive_reopen(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", max_mb=64)
    writer = asyncio.create_task(outbox.run())
    await asyncio.gather(*(outbox.commit([press(t, s) for s in range(10)]) for t in range(200)))
    assert outbox.committed_presses == 2000
    assert outbox.commits < 200  # grouped: fewer transactions than commit calls
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    await outbox.close()

    reopened = await Outbox.open(tmp_path / "outbox.db", max_mb=64)
    assert reopened.next_seq(0) == 10
    assert reopened.next_seq(199) == 10
    assert reopened.next_seq(500) == 0
    pending = await reopened.pending(5000)
    assert len(pending.presses) == 2000
    await reopened.close()


async def test_duplicate_seq_is_kept_once(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", max_mb=64)
    writer = asyncio.create_task(outbox.run())
    await outbox.commit([press(1, 5)])
    await outbox.commit([press(1, 5), press(1, 6)])
    pending = await outbox.pending(100)
    assert [(p.terminal_id, p.seq) for p in pending.presses] == [(1, 5), (1, 6)]
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    await outbox.close()


async def test_full_outbox_raises_busy_and_can_still_drain(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", max_mb=1)
    writer = asyncio.create_task(outbox.run())
    seq = 0
    refused: OutboxBusy | None = None
    for _ in range(200):  # 1 MB holds well under 200 x 1000 rows
        try:
            await outbox.commit([press(1, seq + i) for i in range(1000)])
        except OutboxBusy as exc:
            refused = exc
            break
        seq += 1000
    assert refused is not None
    assert outbox.busy_errors == 1
    pending = await outbox.pending(100000)
    assert len(pending.presses) == seq  # everything committed before is still there
    await outbox.forwarded(pending)  # deletes work at the budget
    await outbox.commit([press(1, seq)])  # and then there is room again
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    await outbox.close()


async def test_store_down_and_outbox_at_budget_gives_busy_then_everything_arrives(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    h = make_harness("")
    h.config_path.write_text(
        h.config_path.read_text()
        .replace("[gateway]", "[gateway]\noutbox_max_mb = 1")
        .replace("[store]", "[store]\nretry_max_s = 0.5"),
        encoding="utf-8",
    )
    await h.start()
    assert h.gateway is not None
    store_db = sqlite3.connect(h.directory / "var" / "central.db", isolation_level=None)
    store_db.execute("BEGIN EXCLUSIVE")  # the store is unreachable for writes
    t, _ = await hello(h)
    acked: list[int] = []
    busy_frame: Presses | None = None
    for n in range(100):
        first = n * 680
        records = tuple(PressRecord(first + i, 1767225600 + i, 1 + i % 4, 0) for i in range(680))
        frame = Presses(1001, 1767226000, first, 0, records)
        await t.send_frame(frame)
        answer = await t.receive(timeout=30)
        if isinstance(answer, Nak):
            assert answer == Nak(1001, NakCode.BUSY, first)
            busy_frame = frame
            break
        assert isinstance(answer, Ack)
        acked.extend(r.seq for r in records)
    assert busy_frame is not None, "the outbox never reached its budget"
    assert len(acked) > 680
    store_db.execute("ROLLBACK")  # the store is back
    store_db.close()
    for _ in range(100):  # the terminal retries later, as the spec says
        await t.send_frame(busy_frame)
        answer = await t.receive(timeout=30)
        if isinstance(answer, Ack):
            break
        await asyncio.sleep(0.1)
    assert isinstance(answer, Ack)
    await t.close()
    keys = [(p.terminal_id, p.seq) for p in await stored(h)]
    expected = acked + [r.seq for r in busy_frame.records]
    assert sorted(keys) == [(1001, s) for s in sorted(expected)]
    await h.stop()


async def test_outbox_refuses_unknown_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(SchemaError, match="schema version 99"):
        await Outbox.open(path, max_mb=1)


async def test_forwarding_under_load_moves_each_row_once(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", max_mb=64)
    store = await SqliteStore.open(tmp_path / "central.db")
    writer = asyncio.create_task(outbox.run())
    forwarder = Forwarder(outbox, store, batch=500, retry_max_s=1)
    forwarding = asyncio.create_task(forwarder.run())

    async def terminal(tid: int) -> None:
        for k in range(20):
            await outbox.commit([press(tid, k * 50 + j) for j in range(50)])

    await asyncio.gather(*(terminal(t) for t in range(50)))
    backlog = await outbox.backlog()
    assert backlog.presses == 0 or backlog.oldest_received_at_ms is not None
    await forwarder.drain()
    forwarding.cancel()
    writer.cancel()
    await asyncio.gather(forwarding, writer, return_exceptions=True)
    assert forwarder.forwarded == 50 * 20 * 50  # no batch was read twice
    assert len([p async for p in store.presses(None, None)]) == 50_000
    assert (await outbox.backlog()) == Backlog(0, 0, None)
    await store.close()
    await outbox.close()


async def test_a_version_1_outbox_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA_V1)
    old.execute("INSERT INTO meta VALUES ('gateway_id', 'cafe')")
    old.execute(
        "INSERT INTO press (terminal_id, seq, occurred_at, utc_offset_s, button, followup,"
        " clock_corrected, transport, received_at_ms) VALUES (1001, 7, 1767225600, 0, 1, 0, 0,"
        " 'tcp', 5)"
    )
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()
    outbox = await Outbox.open(path, max_mb=64)
    try:
        assert outbox.gateway_id == "cafe"
        pending = await outbox.pending(10)
        assert [(p.terminal_id, p.seq) for p in pending.presses] == [(1001, 7)]
        assert pending.hours == []
    finally:
        await outbox.close()


async def test_sms_transaction_commits_its_work_or_nothing(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", max_mb=64)
    writer = asyncio.create_task(outbox.run())

    async def seen(ledger: SmsLedger, digest: bytes, fail: bool) -> int:
        await ledger.remember(digest, 1)
        if fail:
            raise LookupError("the work's own error")
        return 42

    try:
        assert await outbox.sms_transaction(lambda ledger: seen(ledger, b"a", False)) == 42
        with pytest.raises(LookupError):
            await outbox.sms_transaction(lambda ledger: seen(ledger, b"b", True))
        with pytest.raises(OutboxBusy) as busy:  # a database error: the primary key is taken
            await outbox.sms_transaction(lambda ledger: seen(ledger, b"a", False))
        assert isinstance(busy.value.__cause__, sqlite3.IntegrityError)  # the cause is kept
        async with outbox._reader.execute("SELECT digest FROM sms_seen") as cursor:
            assert [r[0] for r in await cursor.fetchall()] == [b"a"]
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await outbox.close()


async def test_a_commit_wakes_the_forwarder_long_before_its_sweep(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", max_mb=64)
    store = await SqliteStore.open(tmp_path / "central.db")
    writer = asyncio.create_task(outbox.run())
    forwarder = Forwarder(outbox, store, batch=500, retry_max_s=1, sweep_s=3600)
    forwarding = asyncio.create_task(forwarder.run())
    try:
        for round_ in range(3):  # idle in between: each commit must wake it again
            async with asyncio.timeout(1):
                while forwarder.forwarded < 50 * round_:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the forwarder is back waiting on its sweep
            await outbox.commit([press(1001, round_ * 50 + j) for j in range(50)])
        async with asyncio.timeout(5):  # an hour's sweep: only the wake gets it there
            while forwarder.forwarded < 150:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert len([p async for p in store.presses(None, None)]) == 150
    finally:
        forwarding.cancel()
        writer.cancel()
        await asyncio.gather(forwarding, writer, return_exceptions=True)
        await store.close()
        await outbox.close()
