"""Fleet status: flags, silent and returned terminals, and the status.db round trip."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from firmware_sim.harness import free_port
from gateway.intake.fleet_status import FleetStatus, Thresholds, load_status, save_status
from protocols.constants import MAINS_POWERED
from protocols.frames import Heartbeat, Hello, Presses, PressRecord
from tests.conftest import GatewayHarness
from tests.support import RawTerminal

LIMITS = Thresholds(silent_after_s=60, low_battery_pct=20, clock_drift_s=120)
T0 = 1_767_225_600.0


def test_flags_from_what_terminals_report() -> None:
    fleet = FleetStatus(LIMITS)
    fleet.heartbeat(Heartbeat(1, int(T0), 20, -80, 0, 10), "tcp", "p", T0)
    fleet.heartbeat(Heartbeat(2, int(T0), MAINS_POWERED, 0, 5, 10), "mqtt", "p", T0)
    fleet.hello(Hello(3, 1, 1, int(T0) + 121, 0, 7), "tcp", "p", T0)
    fleet.hello(Hello(4, 1, 1, 0, 1, 0), "tcp", "p", T0)  # CLOCK_UNSYNCED
    fleet.presses(Presses(5, int(T0) - 119, 0, 0, (PressRecord(0, int(T0), 1, 0),)), "tcp", "p", T0)
    flags = {s.terminal_id: s.flags(T0 + 1, LIMITS) for s in fleet.snapshot()}
    assert flags == {
        1: ["low_battery"],
        2: [],  # mains powered, however low 255 % looks
        3: ["clock_drift"],
        4: ["clock_unsynced"],
        5: [],  # 119 s behind: within the drift allowed
    }
    two = fleet.terminals[2]
    assert (two.signal_dbm, two.queued, two.transport) == (None, 5, "mqtt")  # 0 dBm: unknown
    assert fleet.terminals[1].flags(T0 + 61, LIMITS) == ["silent", "low_battery"]


def test_silent_once_then_returned() -> None:
    fleet = FleetStatus(LIMITS)
    fleet.known([1, 2])
    fleet.heartbeat(Heartbeat(1, int(T0), 90, -70, 0, 10), "tcp", "p", T0)
    with capture_logs() as logs:
        assert fleet.sweep(T0 + 30) == []
        assert fleet.sweep(T0 + 61) == [1]  # 2 was never heard from: not "silent"
        assert fleet.sweep(T0 + 120) == []  # said once
        fleet.heartbeat(Heartbeat(1, int(T0) + 200, 90, -70, 0, 210), "tcp", "p", T0 + 200)
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("terminal_silent", "warning"),
        ("terminal_returned", "info"),
    ]
    assert logs[0]["terminal_id"] == 1
    assert logs[0]["silent_for_s"] == 61.0
    assert logs[1]["silent_for_s"] == 200.0


def test_status_file_round_trip(tmp_path: Path) -> None:
    fleet = FleetStatus(LIMITS)
    fleet.heartbeat(Heartbeat(7, int(T0), 33, -101, 4, 99), "mqtt", "smiley/v1/7/up", T0)
    fleet.hello(Hello(8, 0x0102, 3, 0, 1, 0), "tcp", "10.0.0.8:5000", T0)
    fleet.sweep(T0 + 100)
    path = tmp_path / "status.db"
    save_status(path, fleet.snapshot(), T0 + 100)
    save_status(path, fleet.snapshot(), T0 + 101)  # replaces, does not add
    rows, saved_at = load_status(path)
    assert saved_at == T0 + 101
    assert rows == fleet.snapshot()
    assert load_status(tmp_path / "none.db") == ([], None)
    again = FleetStatus(LIMITS)
    again.restore(rows)
    with capture_logs() as logs:
        again.hello(Hello(7, 1, 1, int(T0) + 300, 0, 0), "tcp", "p", T0 + 300)
    assert [e["event"] for e in logs] == ["terminal_returned"]  # silent before the restart


@pytest.mark.timeout(60)
async def test_gateway_logs_a_terminal_going_silent_and_returning(tmp_path: Path) -> None:
    port = free_port()
    harness = GatewayHarness(tmp_path, extra=f'[health]\nlisten = "127.0.0.1:{port}"\n'
                             "silent_after_s = 0.4\n")  # fmt: skip
    await harness.start()
    try:
        with capture_logs() as logs:
            t = await RawTerminal.connect(harness.port)
            await t.send_frame(Hello(1001, 0x0100, 1, int(time.time()), 0, 0))
            await t.receive()
            deadline = time.monotonic() + 10
            while not any(e["event"] == "terminal_silent" for e in logs):
                assert time.monotonic() < deadline, logs
                await asyncio.sleep(0.05)
            await t.send_frame(Heartbeat(1001, int(time.time()), 50, -80, 0, 5))
            await t.receive()
            await t.close()
        events = [e for e in logs if e["event"] in ("terminal_silent", "terminal_returned")]
        assert [e["event"] for e in events][:2] == ["terminal_silent", "terminal_returned"]
        assert events[0]["terminal_id"] == 1001
        assert events[0]["transport"] == "tcp"
    finally:
        await harness.stop()
    rows, _ = load_status(tmp_path / "var" / "status.db")
    assert {r.terminal_id for r in rows} == {1001, 1002}
