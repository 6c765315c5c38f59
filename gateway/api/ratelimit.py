"""Per-token rate limit: a token bucket of ``count`` requests refilled over ``period_s``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Allows bursts of up to ``count``; steady state ``count`` per ``period_s``."""

    def __init__(
        self, count: int, period_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.count = count
        self.period_s = period_s
        self._rate = count / period_s
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}  # one per credential id: bounded by the table

    def take(self, key: int) -> float:
        """0 if a request may go now, else the seconds until one may."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.count), now)
        bucket.tokens = min(float(self.count), bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def remaining(self, key: int) -> int:
        bucket = self._buckets.get(key)
        return self.count if bucket is None else math.floor(bucket.tokens)
