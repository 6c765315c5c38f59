"""Capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays that double from ``initial`` up to ``cap``, each drawn in [0, limit]."""

    initial: float = 0.1
    cap: float = 30.0
    _attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    _last: float = 0.0

    def next_delay(self) -> float:
        limit = min(self.cap, self.initial * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        self._last = self._rng.uniform(limit / 2, limit)
        return self._last

    @property
    def current(self) -> float:
        """The delay ``next_delay`` returned last."""
        return self._last

    def reset(self) -> None:
        self._attempt = 0
