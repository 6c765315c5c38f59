"""Capped exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffOptions:
    """Delays start at ``initial`` s, grow by ``factor`` up to ``maximum`` s; each is
    scaled by a random factor in [1 - jitter, 1] so a fleet does not retry in step."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("need 0 < initial <= maximum, factor >= 1 and 0 <= jitter <= 1")


class Backoff:
    """The delays of one retry loop; ``reset`` after a success."""

    __slots__ = ("_attempt", "_options", "_rng")

    def __init__(self, options: BackoffOptions, rng: random.Random) -> None:
        self._options = options
        self._rng = rng
        self._attempt = 0

    def next_delay(self) -> float:
        o = self._options
        delay = min(o.maximum, o.initial * o.factor ** min(self._attempt, 64))
        self._attempt += 1
        return delay * (1 - o.jitter * self._rng.random())

    def reset(self) -> None:
        self._attempt = 0
