"""MQTT benchmark of the real gateway process: durable presses/s through a broker.

Run from the repository root::

    .venv/bin/python -m bench.mqtt [--terminals 50] [--frames-per-terminal 200]
                                   [--records-per-frame 50] [--json OUT]

One private Mosquitto (``firmware_sim.harness``, on a free port, persistence on)
serves every phase; the shared broker on 1883 is never touched.

1. baseline, first: a bare aiomqtt subscriber in its own process (QoS 1 on
   ``smiley/v1/+/up``, auto-ack, Receive Maximum = ``--max-in-flight``, only
   counting) takes the same pre-encoded PRESSES frames from the same
   publishers (whose window is freed by the broker's PUBACK here, as nothing
   else answers). Rate = messages x records / (last receipt - first publish);
   median of ``--baseline-repeats``. It runs before the gateway ever connects,
   so the gateway's persistent session does not exist yet and queues nothing.
2. gateway: ``smiley-gateway run`` as a subprocess with an ``[mqtt]`` section
   for the broker. Once a HEARTBEAT probe is ACKed on its down topic, every
   terminal publishes its PRESSES frames (QoS 1, consecutive seqs) keeping
   ``--window`` frames without an ACK; one client reads every ACK on
   ``smiley/v1/+/down``. Durable presses/s = ACKed presses / (last ACK - first
   publish). Each ACK must be the ACK of a frame in flight.
3. store: after SIGTERM the central store must hold exactly the ACKed presses.

Targets are printed as PASS/FAIL; the exit status is 1 only when something
broke (a wrong or missing ACK, presses lost or doubled, a baseline subscriber
that missed messages, a gateway that would not start or stop cleanly).

The parts: ``bench.mqtt_load`` (the clients, the ACK book), ``bench.mqtt_baseline``
(the subscriber process) and the ones the TCP benchmark uses (``bench.fleet``,
``bench.store``, ``bench.procs``, ``bench.report``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

from bench import procs
from bench import report as output
from bench.errors import BenchError
from bench.fleet import PlannedFrame, TerminalSpec, make_fleet, plan_fleet, registry_toml
from bench.mqtt_baseline import Baseline, run_baseline
from bench.mqtt_load import DOWN_FILTER, LoadOutcome, drive_load, probe
from bench.options import LoadOptions, load_parser, parse_load
from bench.procs import Memory
from bench.results import Check, LoadReport, StoreCheck, Throughput, load_problems, measure
from bench.store import check_store, wait_forwarded
from firmware_sim.harness import PrivateMosquitto

GATEWAY_CLIENT_ID = "bench-gateway"
TARGET_BASELINE_RATIO = 0.70
# The store deployment's settings that bear on throughput (deploy/mosquitto/smiley.conf):
# a save every 60 s instead of every second, and 200 QoS 1 messages in flight per
# v3.1.1 client. Later lines override the test config's defaults.
BROKER_EXTRA_CONFIG = """
allow_anonymous true
autosave_interval 60
autosave_on_changes false
max_inflight_messages 200
"""


# ---------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Options(LoadOptions):
    max_in_flight: int


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = load_parser("mqtt", terminals=50, frames=200)
    parser.add_argument("--max-in-flight", type=int, default=200, help="gateway mqtt.max_in_flight")
    options = parse_load(parser, Options, argv)
    if not 1 <= options.max_in_flight <= 65535:
        parser.error("--max-in-flight must be 1..65535 (MQTT Receive Maximum)")
    return options


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class MqttThroughput(Throughput):
    broker_cpu_s: float
    others_cpu_s: float
    subscribed_after_s: float


@dataclass(frozen=True, slots=True)
class Report(LoadReport):
    cpus: int
    throughput: MqttThroughput
    baseline: Baseline
    ratio: float


# ---------------------------------------------------------------- the gateway phase


def mqtt_section(broker_port: int, max_in_flight: int) -> str:
    """The gateway's [mqtt] for the private broker (its [tcp] port tells when it is up)."""
    return f"""[mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
client_id = "{GATEWAY_CLIENT_ID}"
max_in_flight = {max_in_flight}
reconnect_max_s = 1
"""


def summarize_load(
    outcome: LoadOutcome, options: Options, encode_s: float, probe_s: float, memory: Memory
) -> MqttThroughput:
    figures = measure(outcome, options, encode_s, memory)
    return MqttThroughput(
        **{f.name: getattr(figures, f.name) for f in fields(figures)},
        broker_cpu_s=outcome.broker_cpu_s,
        others_cpu_s=outcome.others_cpu_s,
        subscribed_after_s=probe_s,
    )


@dataclass(frozen=True, slots=True)
class GatewayPhase:
    throughput: MqttThroughput
    store: StoreCheck


async def gateway_phase(
    options: Options,
    broker: PrivateMosquitto,
    plans: dict[int, tuple[PlannedFrame, ...]],
    fleet: Sequence[TerminalSpec],
    probe_spec: TerminalSpec,
    root: Path,
    registry: str,
    encode_s: float,
) -> GatewayPhase:
    assert broker.process is not None
    extra = mqtt_section(broker.port, options.max_in_flight)
    gateway = procs.bench_gateway(root / "gateway", registry, extra=extra)
    async with gateway:
        probe_s = await probe(broker.port, probe_spec)
        outcome = await drive_load(
            broker.port,
            gateway,
            broker.process.pid,
            plans,
            fleet,
            options.window,
            probe_spec.terminal_id,
        )
        acked = sum(r.acked_presses for r in outcome.runs)
        lag = await wait_forwarded(gateway, acked, max(r.last_ack for r in outcome.runs))
        memory = procs.memory(gateway) if gateway.alive else Memory(0.0, 0.0)
        exit_code = await procs.stop(gateway)
    store = check_store(gateway, outcome.runs, lag, exit_code)
    return GatewayPhase(summarize_load(outcome, options, encode_s, probe_s, memory), store)


# ---------------------------------------------------------------- report


def evaluate(options: Options, phase: GatewayPhase, baseline: Baseline) -> Report:
    rate = phase.throughput.presses_per_s
    ratio = rate / baseline.presses_per_s if baseline.presses_per_s else 0.0
    checks = (
        Check(
            f"durable presses/s >= {TARGET_BASELINE_RATIO:.2f} x bare aiomqtt subscriber",
            ratio >= TARGET_BASELINE_RATIO,
            f"{ratio:.2f}",
        ),
    )
    return Report(
        options=output.options_json(options),
        cpus=os.cpu_count() or 0,
        throughput=phase.throughput,
        store=phase.store,
        baseline=baseline,
        ratio=ratio,
        checks=checks,
        problems=problems_of(options, phase, baseline),
    )


def problems_of(options: Options, phase: GatewayPhase, baseline: Baseline) -> tuple[str, ...]:
    """What broke (as opposed to a missed target); any of these makes the exit status 1."""
    t = phase.throughput
    problems = load_problems(t.errors, t.presses, options.presses, phase.store)
    problems.extend(r.error for r in baseline.runs if r.error is not None)
    return tuple(problems)


def render(report: Report) -> str:
    lines = ["smiley-gateway MQTT benchmark"]
    lines += _render_load(report.options, report.throughput, report.cpus)
    lines += _render_baseline(report)
    lines += output.render_store(report.store)
    lines += output.render_verdicts(report.checks, report.problems)
    return "\n".join(lines)


def _render_load(o: dict[str, object], t: MqttThroughput, cpus: int) -> list[str]:
    return [
        f"  load          {o['terminals']} terminals x {o['frames_per_terminal']} frames x "
        f"{o['records_per_frame']} records, QoS 1, window {o['window']} frames, max_in_flight "
        f"{o['max_in_flight']}; one aiomqtt client per terminal + one on {DOWN_FILTER}",
        f"                (frames pre-encoded in {t.encode_s:.1f} s; gateway subscribed "
        f"{t.subscribed_after_s:.2f} s after start; neither timed)",
        *output.render_throughput(t, "publish -> its ACK read"),
        f"  broker        CPU {t.broker_cpu_s:.1f} s ({output.share(t.broker_cpu_s, t.wall_s)})",
        output.render_generator(t),
        f"  others        CPU {t.others_cpu_s:.1f} s ({output.share(t.others_cpu_s, t.wall_s)})"
        f" used by processes outside the bench, of {cpus} CPUs",
    ]


def _render_baseline(report: Report) -> list[str]:
    b = report.baseline
    runs = " / ".join(f"{r.presses_per_s / 1000:,.0f}k" for r in b.runs)
    median = sorted(b.runs, key=lambda r: r.presses_per_s)[len(b.runs) // 2]
    return [
        f"  baseline      bare aiomqtt subscriber (QoS 1, auto-ack, counting): "
        f"{b.presses_per_s:,.0f} presses/s = {b.messages_per_s:,.0f} messages/s "
        f"(median of {runs})",
        f"                median run: {median.messages:,} messages received in "
        f"{median.wall_s:.2f} s (all published in {median.published_s:.2f} s); CPU "
        f"subscriber {output.share(median.subscriber_cpu_s, median.wall_s)}, broker "
        f"{output.share(median.broker_cpu_s, median.wall_s)}, generator "
        f"{output.share(median.generator_cpu_s, median.wall_s)}, others "
        f"{output.share(median.others_cpu_s, median.wall_s)}",
        f"  ratio         gateway / baseline = {report.ratio:.2f}",
    ]


# ---------------------------------------------------------------- main


async def run(options: Options, root: Path) -> Report:
    fleet = make_fleet(options.terminals + 1)  # the last one only probes
    load_fleet, probe_spec = fleet[:-1], fleet[-1]
    registry = registry_toml(fleet)
    plans, encode_s = plan_fleet(load_fleet, options, options.seed)
    broker = PrivateMosquitto(root / "broker", extra_config=BROKER_EXTRA_CONFIG)
    try:
        await broker.start()
    except RuntimeError as exc:
        raise BenchError(f"the private mosquitto did not start: {exc}") from exc
    try:
        # Before the gateway's first connection: its persistent session would queue these.
        baseline = await run_baseline(options, broker, plans, load_fleet, root)
        phase = await gateway_phase(
            options, broker, plans, load_fleet, probe_spec, root, registry, encode_s
        )
    finally:
        await broker.stop()
    return evaluate(options, phase, baseline)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    procs.raise_fd_limit(2 * options.terminals + 256)
    bench = partial(run, options)
    return output.run_bench("mqtt", bench, render, keep=options.keep, json_path=options.json_path)


if __name__ == "__main__":
    sys.exit(main())
