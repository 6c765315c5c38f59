"""TCP benchmark of the real gateway process: durable presses/s, ACK latency, memory.

Run from the repository root::

    .venv/bin/python -m bench.tcp [--terminals 100] [--records-per-frame 50]
                                  [--frames-per-terminal 40] [--idle 1000] [--json OUT]

Phases, each against a fresh ``smiley-gateway run`` subprocess in a temp dir:

1. throughput: every terminal sends HELLO and waits for WELCOME; then all send
   pre-encoded PRESSES frames with a window of unacknowledged frames. Durable
   presses/s = ACKed presses / (last ACK - first send). Each answer must be the
   ACK of the right seq. Afterwards the central store must hold exactly the
   ACKed presses (checked again after SIGTERM, which drains the outbox).
2. baseline: bare stdlib ``sqlite3`` with the outbox's durability (WAL,
   synchronous=FULL) and ``press`` table shape inserts the same rows, (a) one
   transaction per frame and (b) in batches of 5000 rows per transaction.
3. idle: ``--idle`` terminals connect, get WELCOME and stay; the gateway's
   VmRSS is read while they are connected.

Targets are printed as PASS/FAIL; the exit status is 1 only when something
broke (a wrong answer, presses lost or doubled, a gateway that would not start
or stop cleanly), never for a missed target.

The parts: ``bench.fleet`` (terminals, frames), ``bench.load`` (the client),
``bench.baseline`` (bare sqlite3), ``bench.store`` (the check), ``bench.procs``
(the gateway process, CPU, memory), ``bench.report`` (output).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench import procs
from bench import report as output
from bench.baseline import Baseline, baseline_frames, run_baseline
from bench.fleet import PlannedFrame, TerminalSpec, make_fleet, plan_fleet, registry_toml
from bench.load import LoadOutcome, close_links, drive_load, open_links
from bench.options import LoadOptions, load_parser, parse_load
from bench.procs import Memory
from bench.results import Check, LoadReport, StoreCheck, Throughput, load_problems, measure
from bench.store import check_store, wait_forwarded

IDLE_SETTLE_S = 1.0
TARGET_BASELINE_RATIO = 0.5
TARGET_IDLE_RSS_MB = 80.0


# ---------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Options(LoadOptions):
    pipeline_depth: int
    idle: int
    baseline_batch: int


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = load_parser("tcp", terminals=100, frames=40)
    parser.add_argument("--pipeline-depth", type=int, default=16, help="gateway tcp.pipeline_depth")
    parser.add_argument("--idle", type=int, default=1000, help="idle terminals (0: skip)")
    parser.add_argument("--baseline-batch", type=int, default=5000, help="rows per txn for (b)")
    options = parse_load(parser, Options, argv)
    if options.idle < 0:
        parser.error("--idle must be at least 0")
    if min(options.baseline_batch, options.pipeline_depth) < 1:
        parser.error("--baseline-batch and --pipeline-depth must be at least 1")
    return options


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Idle:
    terminals: int
    connected: int
    before: Memory
    after: Memory
    per_connection_kb: float
    gateway_exit: int | None
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Report(LoadReport):
    throughput: Throughput
    baseline: Baseline
    ratio_per_frame: float
    ratio_batched: float
    idle: Idle | None


# ---------------------------------------------------------------- phases


def summarize_load(
    outcome: LoadOutcome, options: Options, encode_s: float, memory: Memory
) -> Throughput:
    return measure(outcome, options, encode_s, memory)


@dataclass(frozen=True, slots=True)
class ThroughputPhase:
    throughput: Throughput
    store: StoreCheck
    plans: dict[int, tuple[PlannedFrame, ...]]


async def throughput_phase(
    options: Options, fleet: Sequence[TerminalSpec], root: Path, registry: str
) -> ThroughputPhase:
    plans, encode_s = plan_fleet(fleet, options, options.seed)
    gateway = procs.bench_gateway(
        root / "throughput", registry, pipeline_depth=options.pipeline_depth
    )
    async with gateway:
        outcome = await drive_load(gateway, plans, fleet, options.window)
        acked = sum(r.acked_presses for r in outcome.runs)
        lag = await wait_forwarded(gateway, acked, max(r.last_ack for r in outcome.runs))
        memory = procs.memory(gateway)
        exit_code = await procs.stop(gateway)
    store = check_store(gateway, outcome.runs, lag, exit_code)
    return ThroughputPhase(summarize_load(outcome, options, encode_s, memory), store, plans)


async def idle_phase(fleet: Sequence[TerminalSpec], root: Path, registry: str, depth: int) -> Idle:
    """A fresh gateway takes ``fleet``, greeted and silent; its memory before and after."""
    gateway = procs.bench_gateway(root / "idle", registry, pipeline_depth=depth)
    async with gateway:
        before = procs.memory(gateway)
        links, errors = await open_links(gateway.port, fleet, 0)
        try:
            await asyncio.sleep(IDLE_SETTLE_S)
            after = procs.memory(gateway)
            connected = sum(not link.closed_by_peer for link in links)
        finally:
            await close_links(links)
        exit_code = await procs.stop(gateway)
    grown_kb = (after.rss_mb - before.rss_mb) * 1024
    return Idle(
        terminals=len(fleet),
        connected=connected,
        before=before,
        after=after,
        per_connection_kb=grown_kb / max(1, connected),
        gateway_exit=exit_code,
        errors=tuple(errors[:5]),
    )


# ---------------------------------------------------------------- report


def evaluate(
    options: Options, phase: ThroughputPhase, baseline: Baseline, idle: Idle | None
) -> Report:
    rate = phase.throughput.presses_per_s
    ratio_a = rate / baseline.per_frame_rows_per_s
    ratio_b = rate / baseline.batched_rows_per_s
    checks = [
        Check(
            f"durable presses/s >= {TARGET_BASELINE_RATIO} x baseline (a)",
            ratio_a >= TARGET_BASELINE_RATIO,
            f"{ratio_a:.2f}",
        )
    ]
    if idle is not None:
        checks.append(
            Check(
                f"idle VmRSS with {idle.terminals} terminals < {TARGET_IDLE_RSS_MB:.0f} MB",
                idle.after.rss_mb < TARGET_IDLE_RSS_MB and idle.connected == idle.terminals,
                f"{idle.after.rss_mb:.1f} MB ({idle.connected} connected)",
            )
        )
    return Report(
        options=output.options_json(options),
        throughput=phase.throughput,
        store=phase.store,
        baseline=baseline,
        ratio_per_frame=ratio_a,
        ratio_batched=ratio_b,
        idle=idle,
        checks=tuple(checks),
        problems=problems_of(options, phase, idle),
    )


def problems_of(options: Options, phase: ThroughputPhase, idle: Idle | None) -> tuple[str, ...]:
    """What broke (as opposed to a missed target); any of these makes the exit status 1."""
    t = phase.throughput
    problems = load_problems(t.errors, t.presses, options.presses, phase.store)
    if idle is not None:
        problems.extend(idle.errors)
        if idle.gateway_exit != 0:
            problems.append(f"idle gateway exit status after SIGTERM: {idle.gateway_exit}")
    return tuple(problems)


def render(report: Report) -> str:
    lines = ["smiley-gateway TCP benchmark"]
    lines += _render_load(report.options, report.throughput)
    lines += _render_baseline(report)
    lines += output.render_store(report.store)
    if report.idle is not None:
        lines += _render_idle(report.idle)
    lines += output.render_verdicts(report.checks, report.problems)
    return "\n".join(lines)


def _render_load(o: dict[str, object], t: Throughput) -> list[str]:
    return [
        f"  load          {o['terminals']} terminals x {o['frames_per_terminal']} frames x "
        f"{o['records_per_frame']} records, window {o['window']} frames, pipeline_depth "
        f"{o['pipeline_depth']} (frames pre-encoded in {t.encode_s:.1f} s, not timed)",
        *output.render_throughput(t, "frame sent -> its ACK read"),
        output.render_generator(t),
    ]


def _render_baseline(report: Report) -> list[str]:
    b = report.baseline
    return [
        f"  baseline (a)  sqlite3 WAL+FULL, one txn per frame: "
        f"{b.per_frame_rows_per_s:,.0f} rows/s ({b.per_frame_commits:,} commits; "
        f"median of {_rates(b.per_frame_runs)})",
        f"  baseline (b)  sqlite3 WAL+FULL, {b.batch_rows} rows per txn (upper bound): "
        f"{b.batched_rows_per_s:,.0f} rows/s (median of {_rates(b.batched_runs)})",
        f"  ratio         gateway / (a) = {report.ratio_per_frame:.2f}   "
        f"gateway / (b) = {report.ratio_batched:.2f} (upper bound, not a target)",
    ]


def _rates(runs: Sequence[float]) -> str:
    return " / ".join(f"{r / 1000:,.0f}k" for r in runs)


def _render_idle(i: Idle) -> list[str]:
    return [
        f"  idle          {i.connected}/{i.terminals} terminals welcomed and idle: VmRSS "
        f"{i.after.rss_mb:.1f} MB ({i.before.rss_mb:.1f} MB before, "
        f"{i.per_connection_kb:.1f} kB per connection)"
    ]


# ---------------------------------------------------------------- main


async def run(options: Options, root: Path) -> Report:
    fleet = make_fleet(max(options.terminals, options.idle))
    registry = registry_toml(fleet)
    phase = await throughput_phase(options, fleet[: options.terminals], root, registry)
    baseline = run_baseline(
        root, baseline_frames(phase.plans), options.baseline_batch, options.baseline_repeats
    )
    idle = None
    if options.idle:
        idle = await idle_phase(fleet[: options.idle], root, registry, options.pipeline_depth)
    return evaluate(options, phase, baseline, idle)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    procs.raise_fd_limit(2 * max(options.terminals, options.idle) + 256)
    bench = partial(run, options)
    return output.run_bench("tcp", bench, render, keep=options.keep, json_path=options.json_path)


if __name__ == "__main__":
    sys.exit(main())
