"""Readiness probes: is the central store reachable, can the outbox still commit."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import GatewayError
from gateway.ops.views import OutboxView
from gateway.stores import CentralStore

log = structlog.get_logger("gateway.health")


MIN_FREE_BYTES = 4 * 1024 * 1024  # below this the outbox cannot be trusted to commit


@dataclass(slots=True)
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.detail}


class StoreProbe:
    """Probes the central store with an empty read; remembers since when it is down."""

    def __init__(
        self,
        store: CentralStore,
        *,
        budget_s: float,
        interval_s: float,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.budget_s = budget_s
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._clock = clock
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.probes = 0

    async def run(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.interval_s)

    async def probe_once(self) -> bool:
        self.probes += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                # An empty time window: a real query through the store's own connections.
                rows = self._store.presses(0, 0)
                try:
                    async for _ in rows:
                        break
                finally:
                    aclose = getattr(rows, "aclose", None)  # an async generator: end it now
                    if aclose is not None:
                        await aclose()
        except (GatewayError, TimeoutError, OSError) as exc:
            error = str(exc) or type(exc).__name__
            if self.down_since is None:
                self.down_since = self._clock()
                log.warning("store_unreachable", error=error, budget_s=self.budget_s)
            self.last_error = error
            return False
        if self.down_since is not None:
            log.info("store_reachable", down_for_s=round(self._clock() - self.down_since, 1))
        self.down_since = None
        self.last_error = None
        return True

    @property
    def up(self) -> bool:
        return self.down_since is None

    def down_for_s(self) -> float:
        return 0.0 if self.down_since is None else self._clock() - self.down_since

    def check(self) -> Check:
        if self.down_since is None:
            return Check(True, {"probes": self.probes})
        down = self.down_for_s()
        return Check(
            down < self.budget_s,
            {
                "down_for_s": round(down, 1),
                "budget_s": self.budget_s,
                "error": self.last_error,
                "note": "presses wait in the outbox while the store is down",
            },
        )


class OutboxProbe:
    """Writable: no failed commit since the last good one, and room on its file system."""

    def __init__(self, outbox: OutboxView, data_dir: Path) -> None:
        self._outbox = outbox
        self._data_dir = data_dir
        self._commits = 0
        self._busy = 0
        self._failing = False

    def check(self) -> Check:
        outbox = self._outbox
        if outbox.commits > self._commits:
            self._failing = False
        if outbox.busy_errors > self._busy and outbox.commits == self._commits:
            self._failing = True
        self._commits, self._busy = outbox.commits, outbox.busy_errors
        data_dir = self._data_dir
        detail: dict[str, Any] = {"busy_errors": outbox.busy_errors}
        ok = not self._failing
        if self._failing:
            detail["error"] = "the last commits failed (disk full, I/O error or budget reached)"
        try:
            stat = os.statvfs(data_dir)
        except OSError as exc:
            return Check(False, {**detail, "error": f"{data_dir}: {exc}"})
        free = stat.f_bavail * stat.f_frsize
        detail["free_bytes"] = free
        if free < MIN_FREE_BYTES:
            ok = False
            detail["error"] = f"only {free} bytes free in {data_dir}"
        elif not os.access(data_dir, os.W_OK):
            ok = False
            detail["error"] = f"{data_dir} is not writable"
        return Check(ok, detail)
