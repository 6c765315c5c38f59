"""Moves committed outbox rows to the central store, oldest first, at least once.

A row leaves the outbox only after the store committed it; the store ignores
rows it already has, so a crash between the two steps neither loses nor
doubles anything.

The outbox wakes the forwarder after each commit (``Outbox.new_rows``); a
sweep every ``sweep_s`` catches anything else (rows left by an earlier run).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from gateway.backoff import Backoff
from gateway.errors import GatewayError
from gateway.intake.outbox import Outbox
from gateway.stores import CentralStore, StoredReject

log = structlog.get_logger("gateway.forwarder")


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        store: CentralStore,
        *,
        batch: int,
        retry_max_s: float,
        sweep_s: float = 2.0,
    ) -> None:
        self._outbox = outbox
        self._store = store
        self._batch = batch
        self._backoff = Backoff(initial=0.2, cap=retry_max_s)
        self._sweep_s = sweep_s
        self._wake = outbox.new_rows
        self._one_batch_at_a_time = asyncio.Lock()
        self.forwarded = 0
        self.failures = 0
        self.last_error: str | None = None

    def wake(self) -> None:
        """New rows were committed; forward without waiting for the sweep."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()  # before reading: a commit from now on wakes the wait below
            try:
                moved = await self.forward_once()
            except GatewayError as exc:
                self.failures += 1
                self.last_error = str(exc)
                delay = self._backoff.next_delay()
                log.warning("forward_failed", error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            self.last_error = None
            if moved < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._sweep_s)

    async def forward_once(self) -> int:
        """Forward one batch; return how many rows moved."""
        async with self._one_batch_at_a_time:
            pending = await self._outbox.pending(self._batch)
            if not len(pending):
                return 0
            rejects = [
                StoredReject(f"{self._outbox.gateway_id}:{rid}", row)
                for rid, row in zip(pending.reject_ids, pending.rejects, strict=True)
            ]
            await self._store.write(pending.presses, rejects, pending.hours)
            await self._outbox.forwarded(pending)
            self.forwarded += len(pending)
            return len(pending)

    @contextlib.asynccontextmanager
    async def between_batches(self) -> AsyncIterator[None]:
        """Inside, no batch is in hand: shutdown cancels run() here, never mid-write."""
        async with self._one_batch_at_a_time:
            yield

    async def drain(self) -> None:
        """Forward until the outbox is empty (used at shutdown and by tools)."""
        while await self.forward_once():
            pass
