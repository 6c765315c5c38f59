"""Simulated fleets against the real gateway: exactly once, through faults and a kill -9."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from firmware_sim import Fleet, FleetOptions, LinkOptions, MqttLinkOptions, Steady
from firmware_sim import load_registry as load_sim_registry
from firmware_sim.faults import FaultOptions
from firmware_sim.harness import GatewayProcess, PrivateMosquitto, export_rows, free_port
from gateway.rows import iso_utc
from tests.conftest import GatewayHarness
from tests.support import write_config

REPO = Path(__file__).resolve().parents[1]
SAMPLE_REGISTRY = (REPO / "deploy" / "terminals.example.toml").read_text(encoding="utf-8")
FAULTS = FaultOptions(split_write=0.1, corrupt_crc=0.01, drop=0.005, garbage=0.002)


def link(port: int) -> LinkOptions:
    return LinkOptions("127.0.0.1", port, window=4, max_records=50, answer_timeout=20.0)


def assert_export_matches_acked(rows: list[dict[str, Any]], fleet: Fleet) -> None:
    keys = Counter((r["terminal_id"], r["seq"]) for r in rows)
    doubled = [k for k, n in keys.items() if n > 1]
    assert not doubled, f"stored twice: {doubled[:10]}"
    acked = fleet.report.acked
    missing = set(acked) - set(keys)
    assert not missing, f"ACKed but not stored: {sorted(missing)[:10]}"
    extra = set(keys) - set(acked)
    assert not extra, f"stored but never made: {sorted(extra)[:10]}"
    for row in rows:
        made = acked[(row["terminal_id"], row["seq"])]
        assert (row["button"], row["followup"]) == (made.button, made.followup)
        assert row["precision"] == "second"
        if not made.unsynced:
            assert row["occurred_at"] == iso_utc(made.ts)


async def test_fleet_of_50_with_faults_is_stored_exactly_once(tmp_path: Path) -> None:
    harness = GatewayHarness(tmp_path, registry=SAMPLE_REGISTRY)
    await harness.start()
    keys = load_sim_registry(tmp_path / "terminals.toml")
    options = FleetOptions(pattern=Steady(rate=0), seed=7, faults=FAULTS)
    async with Fleet(keys, link(harness.port), options) as fleet:
        await fleet.run(presses=20_000)
        await fleet.wait_all_acked(timeout=240)
    assert len(fleet.report.acked) == 20_000
    await harness.forwarded()
    await harness.stop()
    assert_export_matches_acked(export_rows(harness.config_path), fleet)


async def test_kill_9_mid_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port, registry=SAMPLE_REGISTRY)
    gateway = GatewayProcess(config, port)
    await gateway.start()
    keys = load_sim_registry(tmp_path / "terminals.toml")
    options = FleetOptions(pattern=Steady(rate=40), seed=11, faults=FAULTS)
    async with Fleet(keys, link(port), options) as fleet:
        run = asyncio.create_task(fleet.run(presses=20_000))
        await fleet.wait_acked(5_000, timeout=120)
        await gateway.kill()
        acked_before_kill = set(fleet.report.acked)
        await asyncio.sleep(0.5)  # terminals notice, keep their records, and retry
        await gateway.start()
        await run
        await fleet.wait_all_acked(timeout=240)
    assert await gateway.terminate() == 0
    rows = export_rows(config)
    assert acked_before_kill <= {(r["terminal_id"], r["seq"]) for r in rows}
    assert_export_matches_acked(rows, fleet)
    assert len(rows) == 20_000


async def test_mqtt_fleet_of_50_through_a_broker_is_stored_exactly_once(tmp_path: Path) -> None:
    broker = PrivateMosquitto(
        tmp_path / "broker",
        extra_config="allow_anonymous true\nmax_inflight_messages 200",
    )
    await broker.start()
    (tmp_path / "gw").mkdir()
    harness = GatewayHarness(
        tmp_path / "gw",
        registry=SAMPLE_REGISTRY,
        extra=f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nclient_id = "gw-fleet"\n',
    )
    await harness.start()
    assert harness.gateway is not None
    assert harness.gateway.mqtt is not None
    await asyncio.wait_for(harness.gateway.mqtt.connected.wait(), 10)
    keys = load_sim_registry(tmp_path / "gw" / "terminals.toml")
    faults = FaultOptions(corrupt_crc=0.01, drop=0.002, garbage=0.002)
    options = FleetOptions(pattern=Steady(rate=0), seed=5, faults=faults)
    link = MqttLinkOptions("127.0.0.1", broker.port, window=4, max_records=50, answer_timeout=10)
    async with Fleet(keys, link, options) as fleet:
        await fleet.run(presses=20_000)
        await fleet.wait_all_acked(timeout=240)
    assert fleet.report.acked_count == 20_000
    await harness.forwarded()
    await harness.stop()
    await broker.stop()
    rows = export_rows(harness.config_path)
    assert {r["transport"] for r in rows} == {"mqtt"}
    assert_export_matches_acked(rows, fleet)
