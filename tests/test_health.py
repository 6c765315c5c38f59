"""The health port: /healthz, /readyz (with a store outage), /metrics and /status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from firmware_sim.harness import PrivateCluster, free_port
from protocols.frames import Heartbeat, Presses, PressRecord
from tests.conftest import GatewayHarness
from tests.pg import started_cluster
from tests.support import KEYS, seal
from tests.test_tcp import hello

pytestmark = pytest.mark.timeout(180)


def health_section(port: int, **values: Any) -> str:
    lines = [f'listen = "127.0.0.1:{port}"'] + [f"{k} = {v!r}" for k, v in values.items()]
    return "[health]\n" + "\n".join(lines) + "\n"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[GatewayHarness, httpx.AsyncClient]]:
    port = free_port()
    harness = GatewayHarness(tmp_path, extra=health_section(port, silent_after_s=600.0))
    await harness.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        yield harness, client
    await harness.stop()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def test_healthz_readyz_metrics_and_status(
    served: tuple[GatewayHarness, httpx.AsyncClient],
) -> None:
    harness, client = served
    assert (await client.get("/healthz")).json() == {"alive": True}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True
    assert set(body["checks"]) == {"outbox", "store", "tcp", "running"}

    t, _ = await hello(harness)
    now = int(time.time())
    records = tuple(PressRecord(seq, now - 5, 1 + seq % 4, 0) for seq in range(3))
    await t.send_frame(Presses(1001, now, 0, 0, records))
    await t.receive()
    await t.send_frame(Heartbeat(1001, now + 400, 15, -87, 2, 3600))
    await t.receive()
    bad = bytearray(seal(2, 1001, b"\x00" * 8, KEYS[1001]))
    bad[-1] ^= 0xFF  # a broken crc: NAK BAD_CRC, quarantined
    await t.send(bytes(bad))
    await t.receive()
    await t.close()

    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    found = samples(metrics.text)
    assert found[("smiley_presses_total", (("transport", "tcp"),))] == 3
    assert found[("smiley_naks_total", (("code", "BAD_CRC"),))] == 1
    assert found[("smiley_quarantined_total", (("reason", "BAD_CRC"),))] == 1
    assert ("smiley_outbox_depth", (("kind", "press"),)) in found
    assert ("smiley_outbox_oldest_age_seconds", ()) in found
    assert ("smiley_forward_lag_seconds", ()) in found
    assert found[("smiley_store_up", ())] == 1
    assert found[("smiley_transport_up", (("transport", "tcp"),))] == 1
    last_seen = found[
        (
            "smiley_terminal_last_seen_timestamp_seconds",
            (("terminal_id", "1001"), ("transport", "tcp")),
        )
    ]
    assert abs(last_seen - time.time()) < 30
    assert found[("smiley_terminal_battery_percent", (("terminal_id", "1001"),))] == 15
    assert found[("smiley_terminal_signal_dbm", (("terminal_id", "1001"),))] == -87
    # No modem and no MQTT in this gateway: their metrics read 0 (a panel never says no data).
    assert found[("smiley_modem_enabled", ())] == 0
    assert found[("smiley_modem_registered", ())] == 0
    assert found[("smiley_transport_enabled", (("transport", "sms"),))] == 0
    assert found[("smiley_transport_up", (("transport", "mqtt"),))] == 0
    assert found[("smiley_mqtt_unacked", ())] == 0
    assert found[("smiley_presses_total", (("transport", "mqtt"),))] == 0
    assert found[("smiley_terminal_silent", (("terminal_id", "1001"),))] == 0

    status = (await client.get("/status")).json()
    by_id = {t["terminal_id"]: t for t in status["terminals"]}
    assert set(by_id) == {1001, 1002}  # every registered terminal, heard from or not
    t1001 = by_id[1001]
    assert t1001["transport"] == "tcp"
    assert t1001["battery_pct"] == 15
    assert t1001["queued"] == 2
    assert t1001["presses"] == 3
    assert t1001["flags"] == ["low_battery", "clock_drift"]
    assert by_id[1002]["last_contact"] is None
    assert by_id[1002]["flags"] == []
    flagged = (await client.get("/status", params={"flagged": "1"})).json()
    assert [t["terminal_id"] for t in flagged["terminals"]] == [1001]
    acme = (await client.get("/status", params={"company": "acme"})).json()
    assert len(acme["terminals"]) == 2
    other = (await client.get("/status", params={"company": "other"})).json()
    assert other["terminals"] == []


async def test_a_taken_health_port_does_not_stop_the_gateway(tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        harness = GatewayHarness(tmp_path, extra=health_section(port))
        with capture_logs() as logs:
            await harness.start()
        try:
            t, _ = await hello(harness)  # presses still come in
            await t.close()
        finally:
            await harness.stop()
    failed = [e for e in logs if e["event"] == "health_server_failed"]
    assert failed
    assert failed[0]["log_level"] == "error"


# --- the store outage ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    yield from started_cluster()


async def wait_readyz(
    client: httpx.AsyncClient, status: int, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/readyz")
        if response.status_code == status:
            body: dict[str, Any] = response.json()
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz stayed {response.status_code}: {response.text}")
        await asyncio.sleep(0.1)


async def test_readyz_unready_when_the_store_is_down_beyond_its_budget(
    tmp_path: Path, cluster: PrivateCluster
) -> None:
    budget = 2.0
    port = free_port()
    harness = GatewayHarness(
        tmp_path,
        extra=health_section(port, store_outage_budget_s=budget, probe_interval_s=0.2),
    )
    text = harness.config_path.read_text(encoding="utf-8")
    harness.config_path.write_text(
        text.replace('url = "sqlite:///var/central.db"', f'url = "{cluster.url()}"'),
        encoding="utf-8",
    )
    await harness.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            assert (await wait_readyz(client, 200))["checks"]["store"]["ok"] is True

            stopped = time.monotonic()  # the probe may see it go down before astop returns
            await cluster.astop()
            # Within its budget a store outage is no reason to be unready: presses wait.
            while True:
                body = (await client.get("/readyz")).json()
                if "down_for_s" in body["checks"]["store"]:
                    break
                await asyncio.sleep(0.05)
            assert body["ready"] is True
            assert body["checks"]["store"]["ok"] is True
            assert body["checks"]["store"]["budget_s"] == budget

            # Beyond it, 503, and the body says which check fails and why.
            body = await wait_readyz(client, 503)
            assert time.monotonic() - stopped >= budget
            assert body["ready"] is False
            assert body["failing"] == ["store"]
            store = body["checks"]["store"]
            assert store["ok"] is False
            assert store["down_for_s"] >= budget
            assert store["error"]
            assert body["checks"]["outbox"]["ok"] is True
            metrics = samples((await client.get("/metrics")).text)
            assert metrics[("smiley_store_up", ())] == 0
            assert metrics[("smiley_ready", ())] == 0

            await cluster.astart()
            body = await wait_readyz(client, 200)
            assert body["failing"] == []
            assert "down_for_s" not in body["checks"]["store"]
    finally:
        if not cluster.running:
            await cluster.astart()
        await harness.stop()


async def test_readyz_unready_while_shutting_down_and_when_mqtt_is_down(tmp_path: Path) -> None:
    port = free_port()
    closed = free_port()
    harness = GatewayHarness(
        tmp_path, extra=health_section(port) + f'[mqtt]\nurl = "mqtt://127.0.0.1:{closed}"\n'
    )
    await harness.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            body = await wait_readyz(client, 503)
            assert body["failing"] == ["mqtt"]
            assert body["checks"]["mqtt"]["error"] == "broker not connected"
    finally:
        await harness.stop()


async def test_status_command_live_and_saved(tmp_path: Path) -> None:
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    script = str(Path(sys.executable).parent / "smiley-gateway")
    port = free_port()
    harness = GatewayHarness(tmp_path, extra=health_section(port, low_battery_pct=20))
    await harness.start()
    term, _ = await hello(harness)
    now = int(time.time())
    await term.send_frame(Heartbeat(1001, now, 12, -95, 0, 60))
    await term.receive()
    await term.close()

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, "status", "--config", str(harness.config_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    live = await asyncio.to_thread(status)
    assert live.returncode == 0, live.stderr
    lines = live.stdout.splitlines()
    assert lines[0] == f"source: live from the gateway at 127.0.0.1:{port}"
    assert lines[1].split()[:2] == ["TERMINAL", "NAME"]
    row = next(line for line in lines if line.startswith("1001 "))
    assert "Entrance" in row  # the name from the registry
    assert "tcp" in row
    assert "12%" in row
    assert "-95 dBm" in row
    assert row.rstrip().endswith("low_battery")
    never = next(line for line in lines if line.startswith("1002 "))
    assert "never" in never
    assert lines[-1] == "2 terminals, 1 flagged"
    as_json = json.loads((await asyncio.to_thread(status, "--json", "--flagged")).stdout)
    assert [t["terminal_id"] for t in as_json["terminals"]] == [1001]

    await harness.stop()  # saves status.db on the way out
    saved = await asyncio.to_thread(status)
    assert saved.returncode == 0, saved.stderr
    assert "status.db, saved" in saved.stdout.splitlines()[0]
    assert any(
        line.startswith("1001 ") and "low_battery" in line for line in saved.stdout.splitlines()
    )


async def test_modem_hook_adds_a_readiness_check_and_metrics(harness: GatewayHarness) -> None:
    from prometheus_client import generate_latest  # noqa: PLC0415

    from gateway.ops.metrics import metrics_registry  # noqa: PLC0415
    from gateway.ops.operations import Operations  # noqa: PLC0415

    @dataclass
    class ModemStatus:  # shaped like gateway.modem_status.ModemStatus: the fields the hook reads
        ready: bool
        signal_rssi: int
        registration: int
        sim: str = "ready"
        storage_used: int | None = None
        storage_total: int | None = None

        @property
        def signal_dbm(self) -> int:
            return -113 + 2 * self.signal_rssi

        @property
        def registered(self) -> bool:
            return self.registration in (1, 5)

    assert harness.gateway is not None
    modem = ModemStatus(ready=True, signal_rssi=20, registration=1)
    ops = Operations(replace(harness.gateway.observed(), modem=modem), env={})
    ready, checks = ops.readiness()
    assert ready
    assert checks["sms"].to_json() == {
        "ok": True, "modem_ready": True, "registered": True, "signal_dbm": -73,
    }  # fmt: skip
    found = samples(generate_latest(metrics_registry(ops)).decode())
    assert found[("smiley_modem_signal_dbm", ())] == -73
    assert found[("smiley_modem_registered", ())] == 1
    assert found[("smiley_transport_up", (("transport", "sms"),))] == 1
    modem.registration = 2  # searching: not registered
    ready, checks = ops.readiness()
    assert not ready
    assert not checks["sms"].ok
    ops.notifier.close()
