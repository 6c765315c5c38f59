"""Soak: the real gateway under a simulated fleet for an hour, on every transport.

::

    .venv/bin/python -m bench.soak                   # 60 minutes, TCP and MQTT
    .venv/bin/python -m bench.soak --minutes 5       # a short check that it all works
    .venv/bin/python -m bench.soak --json soak.json  # also write every number as JSON

The gateway (``.venv/bin/smiley-gateway run``, a separate process, with a
``[health]`` port) takes a steady load from firmware_sim terminals over TCP and
through a private Mosquitto. Every ``--sample-s`` the script reads the
gateway's VmRSS, its open file descriptors and threads (``/proc``) and its
outbox depth (``/metrics``). At the end it reports

- memory growth per hour: the least-squares slope of VmRSS after the warm-up
  (15 minutes, at most a quarter of the run: SQLite's page caches and the
  allocator's arenas fill first, then stop), per hour, as a share of VmRSS at
  the end of the warm-up (target < 2 %);
- open file descriptors at the start and the end (and the most seen);
- the outbox at the end of the load (rows and bytes), and after the fleet
  stopped and the forwarder caught up;
- that every ACKed press is in the central store, and that SIGTERM stopped
  the gateway with status 0.

SMS terminals (``--terminals-sms``, 0 for none) send HOURLY batches through a
simulated GSM modem (firmware_sim, Quectel profile) on a local ``socket://``
port, in simulated time (``--sms-speed`` simulated seconds per second); at
the end the central store must hold each hour with its latest batch's counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from firmware_sim import (
    Fleet,
    FleetOptions,
    LinkOptions,
    ModemProfile,
    MqttLinkOptions,
    SmsFleet,
    SocketModemServer,
    Steady,
    load_registry,
)
from firmware_sim.harness import GatewayProcess, PrivateMosquitto, free_port, write_config
from firmware_sim.sms_terminal import SmsFleetOptions

GROWTH_TARGET_PCT = 2.0


@dataclass
class Sample:
    t_s: float
    rss_kb: int
    fds: int
    threads: int
    outbox_rows: float
    acked: int


@dataclass
class Report:
    minutes: float
    transports: list[str]
    terminals: dict[str, int]
    rate_per_terminal: float
    samples: list[Sample] = field(default_factory=list)
    growth_pct_per_hour: float | None = None
    growth_kb_per_hour: float | None = None
    rss_after_warmup_kb: int | None = None
    fds_start: int | None = None
    fds_end_of_load: int | None = None
    fds_max: int | None = None
    fds_after_fleet_left: int | None = None
    outbox_rows_at_end_of_load: float | None = None
    outbox_rows_drained: float | None = None
    outbox_bytes: int | None = None
    made: int = 0
    acked: int = 0
    stored: int = 0
    exit_code: int | None = None
    stop_s: float | None = None
    sms_batches: int = 0
    sms_hours: int = 0
    broken: list[str] = field(default_factory=list)


def registry_toml(ids: list[int], rng: random.Random) -> str:
    parts = [
        '[[company]]\nid = "soak"\nname = "Soak"\n',
        '[[location]]\nid = 1\ncompany = "soak"\nname = "Store"\ntimezone = "Europe/Helsinki"\n',
        '[[survey]]\nid = 1\ncompany = "soak"\nquestion = "How was it?"\n',
    ]
    parts += [
        f'[[terminal]]\nid = {i}\nkey = "{rng.randbytes(16).hex()}"\nlocation = 1\nsurvey = 1\n'
        for i in ids
    ]
    return "\n".join(parts)


def proc_numbers(pid: int) -> tuple[int, int, int]:
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


def outbox_rows(health_port: int) -> float:
    url = f"http://127.0.0.1:{health_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("smiley_outbox_depth{")
    )


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 3600


async def soak(args: argparse.Namespace, work: Path) -> Report:
    rng = random.Random(args.seed)
    transports = ["tcp"] + ([] if args.no_mqtt else ["mqtt"])
    transports += ["sms"] if args.terminals_sms > 0 else []
    tcp_ids = list(range(10_001, 10_001 + args.terminals_tcp))
    mqtt_ids = list(range(20_001, 20_001 + args.terminals_mqtt)) if "mqtt" in transports else []
    sms_ids = list(range(30_001, 30_001 + args.terminals_sms))
    report = Report(
        args.minutes,
        transports,
        {"tcp": len(tcp_ids), "mqtt": len(mqtt_ids), "sms": len(sms_ids)},
        args.rate,
    )
    all_ids = tcp_ids + mqtt_ids + sms_ids
    modem = None
    sms_section = ""
    if sms_ids:
        modem = SocketModemServer(ModemProfile.preset("quectel"))
        await modem.start()
        sms_section = f'[sms]\nport = "{modem.url}"\npoll_interval_s = 30\n'

    broker = None
    mqtt_section = ""
    if mqtt_ids:
        broker = PrivateMosquitto(
            work / "broker", extra_config="allow_anonymous true\nmax_inflight_messages 200"
        )
        await broker.start()
        mqtt_section = f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nclient_id = "gw-soak"\n'
    port, health_port = free_port(), free_port()
    config = write_config(
        work,
        port=port,
        registry=registry_toml(all_ids, rng),
        extra=f'[health]\nlisten = "127.0.0.1:{health_port}"\n{mqtt_section}{sms_section}',
    )
    gateway = GatewayProcess(config, port)
    await gateway.start()
    assert gateway.process is not None
    pid = gateway.process.pid
    registry = _keys(work / "terminals.toml")
    options = FleetOptions(pattern=Steady(rate=args.rate), seed=args.seed)
    tcp_link = LinkOptions(
        "127.0.0.1", port, window=4, max_records=50, heartbeat_interval=30, battery_pct=80,
        signal_dbm=-85,
    )  # fmt: skip
    fleets = [Fleet({i: registry[i] for i in tcp_ids}, tcp_link, options)]
    if mqtt_ids and broker is not None:
        mqtt_link = MqttLinkOptions("127.0.0.1", broker.port, window=4, heartbeat_interval=30)
        fleets.append(Fleet({i: registry[i] for i in mqtt_ids}, mqtt_link, options))
    sms_fleet = None
    if modem is not None:
        sms_fleet = SmsFleet({i: registry[i] for i in sms_ids}, modem.deliver,
                             SmsFleetOptions(seed=args.seed))  # fmt: skip
    duration = args.minutes * 60
    warmup = min(args.warmup_minutes * 60, duration / 4)
    started = time.monotonic()

    async def sample() -> None:
        while True:
            rss, fds, threads = proc_numbers(pid)
            rows = await asyncio.to_thread(outbox_rows, health_port)
            acked = sum(f.report.acked_count for f in fleets)
            s = Sample(round(time.monotonic() - started, 1), rss, fds, threads, rows, acked)
            report.samples.append(s)
            print(
                f"  t={s.t_s:7.0f} s  VmRSS {rss / 1024:6.1f} MB  fds {fds:4d}  threads"
                f" {threads:3d}  outbox {rows:6.0f} rows  acked {acked:,}",
                flush=True,
            )
            await asyncio.sleep(args.sample_s)

    for fleet in fleets:
        await fleet.__aenter__()
    sampler = asyncio.create_task(sample())
    texting = asyncio.create_task(
        sms_fleet.run(speed=args.sms_speed) if sms_fleet is not None else asyncio.sleep(0)
    )
    try:
        await asyncio.gather(*(f.run(duration=duration) for f in fleets))
        texting.cancel()
        await asyncio.gather(texting, return_exceptions=True)
        if modem is not None:
            await _modem_emptied(modem)
        report.outbox_rows_at_end_of_load = await asyncio.to_thread(outbox_rows, health_port)
        await asyncio.gather(*(f.wait_all_acked(timeout=300) for f in fleets))
    finally:
        texting.cancel()
        sampler.cancel()
        await asyncio.gather(sampler, texting, return_exceptions=True)
        for fleet in fleets:
            await fleet.__aexit__(None, None, None)
    report.made = sum(f.report.made_count for f in fleets)
    report.acked = sum(f.report.acked_count for f in fleets)
    acked_keys = {k for f in fleets for k in f.report.acked}
    for _ in range(240):  # the forwarder catches up: up to 2 minutes
        rows = await asyncio.to_thread(outbox_rows, health_port)
        if not rows:
            break
        await asyncio.sleep(0.5)
    report.outbox_rows_drained = rows
    var = work / "var"
    report.outbox_bytes = sum(p.stat().st_size for p in var.glob("outbox.db*") if p.is_file())
    _, fds, _ = proc_numbers(pid)
    stop_started = time.monotonic()
    report.exit_code = await gateway.terminate()
    report.stop_s = round(time.monotonic() - stop_started, 2)
    if broker is not None:
        await broker.stop()
    if modem is not None:
        await modem.close()

    with sqlite3.connect(var / "central.db") as db:
        stored = {(t, s) for t, s in db.execute("SELECT terminal_id, seq FROM press")}
        hours: dict[tuple[int, int], list[int]] = {}
        for t, hour, button, n in db.execute(
            "SELECT terminal_id, hour, button, count FROM hourly"
        ):  # fmt: skip
            hours.setdefault((t, hour), [0, 0, 0, 0])[button - 1] = n
    report.stored = len(stored)
    if sms_fleet is not None:
        expected = sms_fleet.report.expected_counts()
        report.sms_batches = len(sms_fleet.report.batches)
        report.sms_hours = len(expected)
        wrong = sum(tuple(hours.get(k, [0, 0, 0, 0])) != v for k, v in expected.items())
        if wrong:
            report.broken.append(f"{wrong} of {len(expected)} SMS hours differ in the store")
    if missing := acked_keys - stored:
        report.broken.append(f"{len(missing)} ACKed presses not in the store")
    if report.exit_code != 0:
        report.broken.append(f"gateway exited {report.exit_code} after SIGTERM")
    after = [s for s in report.samples if s.t_s >= warmup]
    if len(after) >= 3:
        base_rss = after[0].rss_kb
        report.rss_after_warmup_kb = base_rss
        kb_per_hour = slope_per_hour([(s.t_s, s.rss_kb) for s in after])
        report.growth_kb_per_hour = round(kb_per_hour, 1)
        report.growth_pct_per_hour = round(100 * kb_per_hour / base_rss, 2)
    if after:
        report.fds_start = after[0].fds
        report.fds_end_of_load = after[-1].fds
        report.fds_max = max(s.fds for s in after)
    report.fds_after_fleet_left = fds
    return report


async def _modem_emptied(modem: SocketModemServer) -> None:
    """The gateway took (and deleted) every message the modem got: up to 2 minutes."""
    for _ in range(240):
        if modem.all_taken:
            return
        await asyncio.sleep(0.5)


def _keys(path: Path) -> dict[int, bytes]:
    return dict(load_registry(path))


def print_report(report: Report) -> None:
    print("smiley-gateway soak")
    print(
        f"  load          {report.minutes:g} min; terminals {report.terminals};"
        f" {report.rate_per_terminal:g} presses/s each; transports {report.transports}"
    )
    print(f"  presses       made {report.made:,}, ACKed {report.acked:,}, stored {report.stored:,}")
    if "sms" in report.transports:
        print(
            f"  sms           {report.sms_batches:,} batches, {report.sms_hours:,} terminal-hours,"
            " each stored with its latest batch's counts unless BROKEN says otherwise"
        )
    if report.growth_pct_per_hour is not None:
        print(
            f"  memory        VmRSS {report.rss_after_warmup_kb} kB after warm-up; growth"
            f" {report.growth_kb_per_hour:+.0f} kB/h = {report.growth_pct_per_hour:+.2f} %/h"
        )
    print(
        f"  fds           after warm-up {report.fds_start}, end of load {report.fds_end_of_load},"
        f" max {report.fds_max}; {report.fds_after_fleet_left} once the terminals left"
    )
    print(
        f"  outbox        {report.outbox_rows_at_end_of_load} rows at the end of the load,"
        f" {report.outbox_rows_drained} after the forwarder caught up; file(s)"
        f" {report.outbox_bytes} bytes"
    )
    print(f"  stop          SIGTERM -> exit {report.exit_code} in {report.stop_s} s")
    for line in report.broken:
        print(f"BROKEN  {line}")
    if report.growth_pct_per_hour is None:
        print("SKIP  memory growth: too few samples after the warm-up (run longer)")
    else:
        verdict = "PASS" if report.growth_pct_per_hour < GROWTH_TARGET_PCT else "FAIL"
        print(
            f"{verdict}  memory growth < {GROWTH_TARGET_PCT} %/h:"
            f" {report.growth_pct_per_hour:+.2f} %/h"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--terminals-tcp", type=int, default=50)
    parser.add_argument("--terminals-mqtt", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0.5, help="presses/s per terminal")
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=15.0)
    parser.add_argument("--no-mqtt", action="store_true", help="TCP only")
    parser.add_argument("--terminals-sms", type=int, default=10, help="0: no SMS")
    parser.add_argument(
        "--sms-speed", type=float, default=60.0, help="SMS terminals' simulated seconds per second"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the whole report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smiley-soak-"))
    try:
        report = asyncio.run(soak(args, work))
    finally:
        if args.keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    return 1 if report.broken else 0


if __name__ == "__main__":
    sys.exit(main())
