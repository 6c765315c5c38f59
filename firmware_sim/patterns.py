"""When people press: the gaps between one terminal's presses, drawn from a seeded RNG.

A pattern is a frozen dataclass whose ``delays(rng)`` yields the seconds to wait
before each next press, for ever. A rate of 0 means as fast as the fleet can go.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class Pattern(Protocol):
    def delays(self, rng: random.Random) -> Iterator[float]:
        """Seconds before each next press; never ends."""
        ...


@dataclass(frozen=True, slots=True)
class Steady:
    """Poisson presses at ``rate`` per second (exponential gaps); 0 means no gaps."""

    rate: float = 1.0

    def __post_init__(self) -> None:
        _check_rate("rate", self.rate)

    def delays(self, rng: random.Random) -> Iterator[float]:
        while True:
            yield _gap(rng, self.rate)


@dataclass(frozen=True, slots=True)
class LunchQueue:
    """A calm trickle at ``rate`` per second, and every ``period`` s a queue walking
    past for ``rush`` s, pressing at ``rush_rate`` per second (Poisson in each phase;
    a calm rate of 0 means nobody presses between queues)."""

    rate: float = 0.05
    rush_rate: float = 2.0
    period: float = 60.0
    rush: float = 10.0

    def __post_init__(self) -> None:
        _check_rate("rate", self.rate)
        if self.rush_rate <= 0 or self.period <= 0 or not 0 < self.rush <= self.period:
            raise ValueError("need rush_rate > 0, period > 0 and 0 < rush <= period")

    def delays(self, rng: random.Random) -> Iterator[float]:
        at = last_press = 0.0
        while True:
            into_period = at % self.period
            in_rush = into_period < self.rush
            rate = self.rush_rate if in_rush else self.rate
            phase_end = at - into_period + (self.rush if in_rush else self.period)
            press_at = at + rng.expovariate(rate) if rate > 0 else phase_end
            if press_at < phase_end:
                yield press_at - last_press
                last_press = press_at
                at = press_at
            else:
                # No press before the phase changes; Poisson gaps are memoryless,
                # so draw again from the phase boundary at the new rate.
                at = phase_end


@dataclass(frozen=True, slots=True)
class Child:
    """A child hammering the buttons: ``presses`` presses ``1/rate`` s apart, then
    a calm pause of ``pause`` s on average (exponential) before the next child."""

    rate: float = 10.0
    presses: int = 20
    pause: float = 30.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.presses < 1 or self.pause < 0:
            raise ValueError("need rate > 0, presses >= 1 and pause >= 0")

    def delays(self, rng: random.Random) -> Iterator[float]:
        while True:
            yield rng.expovariate(1 / self.pause) if self.pause > 0 else 0.0
            for _ in range(self.presses - 1):
                yield 1 / self.rate


def _check_rate(name: str, rate: float) -> None:
    if rate < 0:
        raise ValueError(f"{name} must be >= 0, not {rate}")


def _gap(rng: random.Random, rate: float) -> float:
    return rng.expovariate(rate) if rate > 0 else 0.0


class PressBudget:
    """The fleet-wide number of presses left to make (None: no limit)."""

    __slots__ = ("made", "total")

    def __init__(self, total: int | None) -> None:
        if total is not None and total < 0:
            raise ValueError("the press budget cannot be negative")
        self.total = total
        self.made = 0

    @property
    def spent(self) -> bool:
        return self.total is not None and self.made >= self.total

    def take(self) -> bool:
        """Claim one press; False once the budget is spent."""
        if self.spent:
            return False
        self.made += 1
        return True
