"""An MQTT backlog does not grow the gateway: issue #15, points 1 and 2, against Mosquitto 2.0.x.

A private broker keeps the gateway's persistent session while the gateway is
down; the test publishes a backlog into it, then starts the gateway (a
process of its own, so its memory is its own) with ``max_in_flight = 200``.

What is counted, and by whom:
- *unacknowledged inside the gateway*: the gateway's own counters on
  /metrics (``smiley_mqtt_unacked_peak``: messages paho handed to the gateway
  minus PUBACKs it sent, at its highest). Mosquitto 2.0.11 sends far more than
  the Receive Maximum once the gateway acknowledges; those wait unread in the
  socket and at the broker, which is the point.
- *every frame once*: the rows the gateway exports (presses) or the
  quarantine it exports (refused payloads), against what was published.
- *memory*: VmRSS of the gateway when idle after a warm-up (first run), and
  VmHWM (its peak) of the run that drains the backlog, from /proc.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

from firmware_sim.harness import (
    GatewayProcess,
    PrivateMosquitto,
    export_rows,
    free_port,
    publish_acknowledged,
)
from protocols.frames import Presses, PressRecord, encode
from tests.support import KEYS, write_config

MAX_IN_FLIGHT = 200
RSS_BUDGET_KB = 30 * 1024
T0 = 1_767_225_600


def one_press(seq: int, terminal_id: int = 1001) -> bytes:
    record = PressRecord(seq, T0 + seq % 86_400, 1 + seq % 4, 0)
    return encode(Presses(terminal_id, T0 + 86_400, seq, 0, (record,)), KEYS[terminal_id])


def publish_all(port: int, payloads: list[bytes], terminal_id: int = 1001) -> None:
    """QoS 1 publishes, each acknowledged by the broker (so it holds them)."""
    assert publish_acknowledged(port, f"smiley/v1/{terminal_id}/up", payloads) == len(payloads)


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


async def until_metric(port: int, name: str, at_least: float, timeout: float) -> dict[str, float]:
    async with asyncio.timeout(timeout):
        while True:
            try:
                samples = await asyncio.to_thread(metrics, port)
            except OSError:
                samples = {}
            if samples.get(name, 0) >= at_least:
                return samples
            await asyncio.sleep(0.2)


class Rig:
    """A private broker and one gateway configuration on it, with its health port."""

    def __init__(self, tmp_path: Path) -> None:
        self.broker = PrivateMosquitto(tmp_path / "broker", extra_config="allow_anonymous true")
        self.health_port = free_port()
        tcp_port = free_port()
        extra = f"""
[mqtt]
url = "mqtt://127.0.0.1:{self.broker.port}"
client_id = "gw-backlog"
max_in_flight = {MAX_IN_FLIGHT}
reconnect_max_s = 1
[health]
listen = "127.0.0.1:{self.health_port}"
"""
        self.config = write_config(tmp_path / "gw", port=tcp_port, extra=extra)
        self.gateway = GatewayProcess(self.config, tcp_port)

    async def idle_rss_after_warm_up(self, warm_up: list[bytes]) -> int:
        """Start (the session and its subscription now exist at the broker), warm up, idle RSS."""
        await self.broker.start()
        await self.gateway.start()
        await until_metric(self.health_port, 'smiley_transport_up{transport="mqtt"}', 1, 30)
        await asyncio.to_thread(publish_all, self.broker.port, warm_up)
        await until_metric(self.health_port, "smiley_mqtt_pubacks_total", len(warm_up), 60)
        await asyncio.sleep(1)  # idle: the forwarder and the housekeeping have run once
        idle = proc_kb(self.gateway.pid, "VmRSS")
        assert await self.gateway.terminate() == 0
        return idle

    async def drain(self, backlog: list[bytes]) -> tuple[dict[str, float], int, int, float]:
        """Queue ``backlog`` with the gateway down, start it: metrics, peak and after RSS, time."""
        await asyncio.to_thread(publish_all, self.broker.port, backlog)
        started = time.monotonic()
        await self.gateway.start()
        samples = await until_metric(
            self.health_port, "smiley_mqtt_pubacks_total", len(backlog), 120
        )
        elapsed = time.monotonic() - started
        await asyncio.sleep(1)
        after = proc_kb(self.gateway.pid, "VmRSS")
        peak = proc_kb(self.gateway.pid, "VmHWM")
        samples = await asyncio.to_thread(metrics, self.health_port)
        return samples, peak, after, elapsed

    async def close(self) -> None:
        if self.gateway.alive:
            assert await self.gateway.terminate() == 0
        await self.broker.stop()


def check_flow(samples: dict[str, float], sent: int) -> None:
    assert samples["smiley_mqtt_unacked_peak"] <= MAX_IN_FLIGHT
    assert samples["smiley_mqtt_received_total"] == sent  # no redelivery: one session
    assert samples["smiley_mqtt_pubacks_total"] == sent
    assert samples["smiley_mqtt_unacked"] == 0
    assert samples["smiley_mqtt_read_holds_total"] >= 1  # the broker did send past the bound


async def test_a_backlog_of_50000_presses_is_drained_within_the_bound_and_budget(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    warm_up = [one_press(seq) for seq in range(2_000)]
    backlog = [one_press(seq) for seq in range(2_000, 52_000)]
    try:
        idle = await rig.idle_rss_after_warm_up(warm_up)
        samples, peak, after, elapsed = await rig.drain(backlog)
        print(f"presses: idle {idle} kB, peak {peak} kB, after {after} kB, {elapsed:.1f} s, "
              f"peak unacked {samples['smiley_mqtt_unacked_peak']:.0f}, "
              f"holds {samples['smiley_mqtt_read_holds_total']:.0f}, "
              f"QoS 0 answers {samples['smiley_mqtt_answers_qos0_total']:.0f}")  # fmt: skip
        check_flow(samples, len(backlog))
        assert peak - idle <= RSS_BUDGET_KB
    finally:
        await rig.close()
    seqs = sorted(r["seq"] for r in export_rows(rig.config) if r["terminal_id"] == 1001)
    assert seqs == list(range(52_000))  # every frame stored once


async def test_a_burst_of_20000_malformed_payloads_is_quarantined_within_the_bound_and_budget(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    warm_up = [one_press(seq) for seq in range(2_000)]
    burst = [b"\x7e\x00not a frame %06d" % n for n in range(20_000)]
    try:
        idle = await rig.idle_rss_after_warm_up(warm_up)
        samples, peak, after, elapsed = await rig.drain(burst)
        print(f"malformed: idle {idle} kB, peak {peak} kB, after {after} kB, {elapsed:.1f} s, "
              f"peak unacked {samples['smiley_mqtt_unacked_peak']:.0f}")  # fmt: skip
        check_flow(samples, len(burst))
        assert peak - idle <= RSS_BUDGET_KB
    finally:
        await rig.close()
    rejected = export_rows(rig.config, "--rejected")
    raws = [bytes.fromhex(r["raw_hex"]) for r in rejected if r["transport"] == "mqtt"]
    assert len(raws) == len(burst)  # each quarantined once
    # The decoder keeps what it read of a payload before refusing it (a prefix).
    assert all(burst[0].startswith(raw) for raw in raws)
