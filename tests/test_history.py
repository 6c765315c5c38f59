"""The console's history ring: bounded over weeks, kept across a restart, fed by a gateway."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from firmware_sim.harness import free_port
from gateway.ops.history import (
    HISTORY_FILE,
    HOUR,
    HOUR_BUCKETS,
    MAX_SERIES,
    MINUTE,
    MINUTE_BUCKETS,
    HistoryRing,
)
from protocols.frames import Presses, PressRecord
from tests.conftest import GatewayHarness
from tests.test_tcp import hello

pytestmark = pytest.mark.timeout(240)

START = 1_780_000_000.0  # a fixed simulated time
COUNTS = ("presses:tcp", "presses:mqtt", "refusals:BAD_CRC")
LEVELS = ("outbox:depth", "outbox:lag_s", "modem:signal_dbm")


async def test_the_ring_stays_bounded_over_thirty_simulated_days(tmp_path: Path) -> None:
    ring = await HistoryRing.open(tmp_path / HISTORY_FILE)
    step = 5 * MINUTE
    day = 24 * HOUR
    pages_after_window: int | None = None
    try:
        for i in range(30 * day // step):
            at = START + i * step
            await ring.record(at, dict.fromkeys(COUNTS, 2.0), {s: float(i % 100) for s in LEVELS})
            if at == START + 15 * day:  # both windows are full from here on
                pages_after_window = (await ring.size())[1]
        buckets, pages = await ring.size()
    finally:
        await ring.close()
    series = len(COUNTS) + len(LEVELS)
    # Five-minute samples fill every 12th minute bucket, and every hour bucket.
    assert buckets == series * (MINUTE_BUCKETS // 5 + HOUR_BUCKETS)
    assert pages_after_window is not None
    assert pages <= pages_after_window * 1.2, (pages_after_window, pages)


async def test_counts_add_up_levels_keep_the_last_and_reopen_keeps_both(tmp_path: Path) -> None:
    path = tmp_path / HISTORY_FILE
    ring = await HistoryRing.open(path)
    hour = START // HOUR * HOUR
    await ring.record(hour + 10, {"presses:tcp": 3}, {"outbox:depth": 7})
    await ring.record(hour + 70, {"presses:tcp": 4}, {"outbox:depth": 2})
    await ring.close()
    ring = await HistoryRing.open(path)
    try:
        hours = await ring.points("presses:", HOUR, hour - HOUR)
        minutes = await ring.points("outbox:", MINUTE, hour)
        levels = await ring.points("outbox:", HOUR, hour)
    finally:
        await ring.close()
    assert [(p.at, p.value) for p in hours["tcp"]] == [(hour, 7.0)]
    assert [(p.at, p.value) for p in minutes["depth"]] == [(hour, 7.0), (hour + 60, 2.0)]
    assert [p.value for p in levels["depth"]] == [2.0]


async def test_a_series_beyond_the_bound_is_not_kept(tmp_path: Path) -> None:
    ring = await HistoryRing.open(tmp_path / HISTORY_FILE)
    try:
        await ring.record(START, {f"refusals:R{i}": 1 for i in range(MAX_SERIES + 10)}, {})
        found = await ring.points("refusals:", HOUR, START - HOUR)
    finally:
        await ring.close()
    assert len(found) == MAX_SERIES


async def sent_presses(harness: GatewayHarness, n: int) -> None:
    t, _ = await hello(harness)
    now = int(time.time())
    seq = harness.gateway.outbox.next_seq(1001) if harness.gateway else 0
    records = tuple(PressRecord(seq + i, now - 5, 1 + i % 4, 0) for i in range(n))
    await t.send_frame(Presses(1001, now, seq, 0, records))
    await t.receive()
    await t.close()


async def presses_charted(path: Path, expected: float) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ring = await HistoryRing.open(path)
        try:
            points = (await ring.points("presses:", HOUR, time.time() - 2 * HOUR)).get("tcp", [])
        finally:
            await ring.close()
        if sum(p.value for p in points) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"presses:tcp never reached {expected}")


async def test_a_gateway_feeds_the_ring_and_a_restart_adds_to_it(tmp_path: Path) -> None:
    extra = f'[health]\nlisten = "127.0.0.1:{free_port()}"\nhistory_interval_s = 0.1\n'
    harness = GatewayHarness(tmp_path, extra=extra)
    path = tmp_path / "var" / HISTORY_FILE
    await harness.start()
    try:
        await sent_presses(harness, 3)
        await presses_charted(path, 3)
    finally:
        await harness.stop()
    await harness.start()  # a new process's counters start at 0; the ring keeps the 3
    try:
        await sent_presses(harness, 2)
        await presses_charted(path, 5)
    finally:
        await harness.stop()
