"""Output of the TCP and MQTT benchmarks: the lines they print the same way, the JSON, the run.

A benchmark's ``main`` hands :func:`run_bench` its coroutine; the exit status
is 1 only when something broke (``problems``), never for a missed target.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bench.errors import BenchError
from bench.procs import Memory
from bench.results import Check, Latency, StoreCheck
from firmware_sim.harness import HarnessError


class LoadFigures(Protocol):
    """What the shared load lines read of a benchmark's throughput result."""

    @property
    def presses(self) -> int: ...
    @property
    def frames(self) -> int: ...
    @property
    def wall_s(self) -> float: ...
    @property
    def presses_per_s(self) -> float: ...
    @property
    def latency(self) -> Latency: ...
    @property
    def in_flight_presses(self) -> int: ...
    @property
    def gateway_cpu_s(self) -> float: ...
    @property
    def gateway_cpu_us_per_press(self) -> float: ...
    @property
    def generator_cpu_s(self) -> float: ...
    @property
    def memory(self) -> Memory: ...


class BenchReport(Protocol):
    """A dataclass report with the problems that make the exit status 1."""

    @property
    def problems(self) -> tuple[str, ...]: ...


R = TypeVar("R", bound=BenchReport)


def share(cpu_s: float, wall_s: float) -> str:
    return f"{100 * cpu_s / wall_s:.0f}% of one core" if wall_s > 0 else "n/a"


def options_json(options: object) -> dict[str, object]:
    fields: dict[str, object] = asdict(options)  # type: ignore[call-overload]
    return {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()}


def render_throughput(t: LoadFigures, timed: str) -> list[str]:
    """Throughput, ACK latency (``timed``: what to what) and the gateway's CPU and memory."""
    queueing_ms = 1000 * t.in_flight_presses / t.presses_per_s if t.presses_per_s else 0.0
    return [
        f"  throughput    {t.presses:,} presses ({t.frames:,} frames) ACKed in {t.wall_s:.2f} s"
        f" = {t.presses_per_s:,.0f} durable presses/s",
        f"  ACK latency   p50 {t.latency.p50_ms:.1f} ms   p99 {t.latency.p99_ms:.1f} ms   "
        f"max {t.latency.max_ms:.1f} ms ({timed})",
        f"                {t.in_flight_presses:,} presses in flight: queueing alone gives "
        f"in-flight / rate = {queueing_ms:.0f} ms",
        f"  gateway       CPU {t.gateway_cpu_s:.1f} s ({share(t.gateway_cpu_s, t.wall_s)}), "
        f"{t.gateway_cpu_us_per_press:.1f} us per press; peak RSS (VmHWM) "
        f"{t.memory.hwm_mb:.1f} MB, RSS at end {t.memory.rss_mb:.1f} MB",
    ]


def render_generator(t: LoadFigures) -> str:
    return f"  generator     CPU {t.generator_cpu_s:.1f} s ({share(t.generator_cpu_s, t.wall_s)})"


def render_store(s: StoreCheck) -> list[str]:
    lag = s.forwarded_after_last_ack_s
    when = "never (timeout)" if lag is None else f"{lag:.2f} s after the last ACK"
    verdict = "exactly the ACKed ones" if s.exact else "MISMATCH"
    return [
        f"  store         {s.central_presses:,} presses in the central store ({verdict}); "
        f"all forwarded {when}; outbox left {s.outbox_left}; gateway exit {s.gateway_exit}"
    ]


def render_verdicts(checks: Sequence[Check], problems: Sequence[str]) -> list[str]:
    lines = [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.value}" for c in checks]
    return lines + [f"BROKEN  {p}" for p in problems]


def run_bench(
    name: str,
    run: Callable[[Path], Coroutine[Any, Any, R]],
    render: Callable[[R], str],
    *,
    keep: bool,
    json_path: Path | None,
) -> int:
    """Run ``run`` in a fresh temp dir, print its report (and write it as JSON); exit status."""
    root = Path(tempfile.mkdtemp(prefix=f"smiley-bench-{name}-"))
    try:
        report = asyncio.run(run(root))
    except (BenchError, HarnessError) as exc:
        print(f"bench.{name}: {exc}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f"temp dir kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(render(report))
    if json_path is not None:
        body: Any = asdict(report)  # type: ignore[call-overload]
        json_path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return 1 if report.problems else 0
