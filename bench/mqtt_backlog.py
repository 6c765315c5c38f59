"""Peak RSS of the gateway against the size of an MQTT backlog (issue #15): it must stay flat.

A private Mosquitto keeps the gateway's persistent session while the gateway
is down; for each backlog size the bench publishes that many one-press frames,
starts the gateway (``mqtt.max_in_flight = 200``), waits until it has sent a
PUBACK for each (its /metrics), and reads VmHWM (peak RSS) from /proc. The
idle figure is VmRSS after a warm-up of 2,000 presses.

    python -m bench.mqtt_backlog [SIZE ...]     (default: 10000 50000 200000)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from firmware_sim.harness import (
    GatewayProcess,
    PrivateMosquitto,
    free_port,
    publish_acknowledged,
    write_config,
)
from protocols.frames import Presses, PressRecord, encode

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
REGISTRY = """
[[company]]
id = "acme"
name = "Acme"
[[location]]
id = 10
company = "acme"
name = "Store"
timezone = "Europe/Helsinki"
[[survey]]
id = 100
company = "acme"
question = "How was your visit?"
locale = "en-US"
scale = "four"
[[terminal]]
id = 1001
key = "000102030405060708090a0b0c0d0e0f"
location = 10
survey = 100
"""
T0 = 1_767_225_600
SIZES = (10_000, 50_000, 200_000)


def one_press(seq: int) -> bytes:
    record = PressRecord(seq, T0 + seq % 86_400, 1 + seq % 4, 0)
    return encode(Presses(1001, T0 + 86_400, seq, 0, (record,)), KEY)


def publish(port: int, first: int, count: int) -> None:
    payloads = (one_press(seq) for seq in range(first, first + count))
    publish_acknowledged(port, "smiley/v1/1001/up", payloads)


def metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rpartition(" ")[2])
    return 0.0


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


async def until(port: int, name: str, at_least: float, within_s: float) -> None:
    async with asyncio.timeout(within_s):
        while await asyncio.to_thread(metric, port, name) < at_least:  # noqa: ASYNC110 - polls a process
            await asyncio.sleep(0.2)


async def run(directory: Path, sizes: list[int]) -> None:
    broker = PrivateMosquitto(directory / "broker", extra_config="allow_anonymous true")
    health = free_port()
    tcp = free_port()
    extra = f"""
[mqtt]
url = "mqtt://127.0.0.1:{broker.port}"
client_id = "gw-bench-backlog"
max_in_flight = 200
[health]
listen = "127.0.0.1:{health}"
"""
    config = write_config(directory / "gw", port=tcp, registry=REGISTRY, extra=extra)
    gateway = GatewayProcess(config, tcp)
    await broker.start()
    try:
        await gateway.start()
        await until(health, 'smiley_transport_up{transport="mqtt"}', 1, 30)
        await asyncio.to_thread(publish, broker.port, 0, 2_000)
        await until(health, "smiley_mqtt_pubacks_total", 2_000, 60)
        await asyncio.sleep(1)
        idle = proc_kb(gateway.pid, "VmRSS")
        await gateway.terminate()
        print(f"idle after warm-up: {idle / 1024:.1f} MB")
        print(f"{'backlog':>8} {'drain s':>8} {'msg/s':>8} {'peak MB':>8} {'+idle MB':>8} "
              f"{'after MB':>8} {'unacked':>8}")  # fmt: skip
        first = 2_000
        peaks: list[int] = []
        for size in sizes:
            await asyncio.to_thread(publish, broker.port, first, size)
            first += size
            started = time.monotonic()
            await gateway.start()
            await until(health, "smiley_mqtt_pubacks_total", size, 600)
            elapsed = time.monotonic() - started
            peak = proc_kb(gateway.pid, "VmHWM")
            after = proc_kb(gateway.pid, "VmRSS")
            unacked = metric(health, "smiley_mqtt_unacked_peak")
            await gateway.terminate()
            peaks.append(peak)
            print(f"{size:>8} {elapsed:>8.1f} {size / elapsed:>8.0f} {peak / 1024:>8.1f} "
                  f"{(peak - idle) / 1024:>8.1f} {after / 1024:>8.1f} {unacked:>8.0f}")  # fmt: skip
        # The ratios the target is stated in: peak against idle (the baseline of
        # this run), and the largest backlog's peak against the smallest's (flat: 1).
        print(f"peak / idle at {sizes[-1]}: {peaks[-1] / idle:.2f}; "
              f"peak at {sizes[-1]} / peak at {sizes[0]}: {peaks[-1] / peaks[0]:.2f}")  # fmt: skip
    finally:
        if gateway.alive:
            await gateway.kill()
        await broker.stop()


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or list(SIZES)
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-backlog-") as directory:
        asyncio.run(run(Path(directory), sizes))


if __name__ == "__main__":
    main()
