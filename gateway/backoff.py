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

    def next_delay(self) -> float:
        limit = min(self.cap, self.initial * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return self._rng.uniform(limit / 2, limit)

    def reset(self) -> None:
        self._attempt = 0
