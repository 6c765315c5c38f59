"""What a load run measured, in the shape both the TCP and the MQTT benchmark report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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
