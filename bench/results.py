"""What a load run measured, in the shape both the TCP and the MQTT benchmark report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bench.options import LoadOptions
from bench.procs import Memory


@dataclass(frozen=True, slots=True)
class TerminalRun:
    terminal_id: int
    acked_frames: int
    acked_presses: int
    latencies_s: tuple[float, ...]
    first_send: float
    last_ack: float
    error: str | None


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class Totals:
    """The fleet's ACKed presses and frames, and the time from first send to last ACK."""

    presses: int
    frames: int
    wall_s: float
    latency: Latency

    @property
    def presses_per_s(self) -> float:
        return self.presses / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Throughput:
    """What a load measured (the MQTT benchmark adds the broker's share to it)."""

    presses: int
    frames: int
    wall_s: float
    presses_per_s: float
    latency: Latency
    in_flight_presses: int
    gateway_cpu_s: float
    gateway_cpu_us_per_press: float
    generator_cpu_s: float
    encode_s: float
    memory: Memory
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoreCheck:
    central_presses: int
    forwarded_after_last_ack_s: float | None
    outbox_left: int
    exact: bool
    mismatched_terminals: tuple[str, ...]
    gateway_exit: int | None


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    value: str


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def totals(runs: Sequence[TerminalRun]) -> Totals:
    latencies = sorted(lat for r in runs for lat in r.latencies_s)
    return Totals(
        presses=sum(r.acked_presses for r in runs),
        frames=sum(r.acked_frames for r in runs),
        wall_s=max(r.last_ack for r in runs) - min(r.first_send for r in runs),
        latency=Latency(
            p50_ms=percentile(latencies, 0.50) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            max_ms=(latencies[-1] if latencies else 0.0) * 1000,
        ),
    )


class LoadOutcome(Protocol):
    """What a benchmark's load generator returns."""

    @property
    def runs(self) -> tuple[TerminalRun, ...]: ...
    @property
    def errors(self) -> tuple[str, ...]: ...
    @property
    def gateway_cpu_s(self) -> float: ...
    @property
    def generator_cpu_s(self) -> float: ...


def measure(
    outcome: LoadOutcome, options: LoadOptions, encode_s: float, memory: Memory
) -> Throughput:
    total = totals(outcome.runs)
    return Throughput(
        presses=total.presses,
        frames=total.frames,
        wall_s=total.wall_s,
        presses_per_s=total.presses_per_s,
        latency=total.latency,
        in_flight_presses=options.in_flight_presses,
        gateway_cpu_s=outcome.gateway_cpu_s,
        gateway_cpu_us_per_press=outcome.gateway_cpu_s * 1e6 / max(1, total.presses),
        generator_cpu_s=outcome.generator_cpu_s,
        encode_s=encode_s,
        memory=memory,
        errors=outcome.errors,
    )


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What every load benchmark reports; each adds its throughput, baseline and ratio."""

    options: dict[str, object]
    store: StoreCheck
    checks: tuple[Check, ...]
    problems: tuple[str, ...]


def load_problems(errors: Sequence[str], acked: int, expected: int, store: StoreCheck) -> list[str]:
    """What broke in a load and its store check (as opposed to a missed target)."""
    problems = list(errors[:10])
    if acked != expected:
        problems.append(f"{acked} of {expected} presses ACKed")
    problems.extend(store.mismatched_terminals[:10])
    if store.central_presses != acked:
        problems.append(f"central store holds {store.central_presses}, ACKed {acked}")
    if store.outbox_left:
        problems.append(f"{store.outbox_left} presses left in the outbox after shutdown")
    if store.gateway_exit != 0:
        problems.append(f"gateway exit status after SIGTERM: {store.gateway_exit}")
    return problems
