"""WELCOME's ``next_seq`` behind a load balancer: never lower than the central store's.

A terminal may reach any instance (#21.2). An instance whose outbox never saw
it would answer HELLO with 0 (or an old value), and a terminal that lost its
counter would number new presses from there: seqs the store holds already, so
the store would drop them as repeats. Hence at every HELLO: one more than the
larger of the outbox's and the store's highest seq.

The store is asked with a short timeout: a HELLO never waits long for a store
that is down or slow. Then the outbox's value is taken (logged
``store_seq_unavailable``) and the store is not asked again for a while, so a
reconnecting fleet is not held up terminal by terminal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from gateway.errors import GatewayError
from gateway.stores import StoreReader

log = structlog.get_logger("gateway.intake")

STORE_SEQ_TIMEOUT_S = 2.0
STORE_SEQ_RETRY_S = 10.0
"""After a failed lookup, HELLOs take the outbox's value for this long without asking."""

OpenReader = Callable[[], Awaitable[StoreReader]]
Monotonic = Callable[[], float]


class StoreSeq:
    """The store's highest seq per terminal, or None when the store does not answer in time."""

    def __init__(
        self,
        open_reader: OpenReader,
        *,
        timeout_s: float = STORE_SEQ_TIMEOUT_S,
        retry_s: float = STORE_SEQ_RETRY_S,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._open_reader = open_reader
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._monotonic = monotonic
        self._opening: asyncio.Task[StoreReader] | None = None
        self._quiet_until = 0.0
        self.unavailable = 0
        """Lookups that fell back to the outbox's value (tests, metrics)."""

    async def highest(self, terminal_id: int) -> int | None:
        """The store's highest seq for the terminal; None if it has none or did not answer."""
        if self._monotonic() < self._quiet_until:
            self.unavailable += 1
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                reader = await asyncio.shield(self._reader())
                return await reader.max_seq(terminal_id)
        except (TimeoutError, GatewayError, OSError) as exc:
            self.unavailable += 1
            self._quiet_until = self._monotonic() + self._retry_s
            log.warning(
                "store_seq_unavailable",
                terminal_id=terminal_id,
                error=str(exc) or type(exc).__name__,
                retry_in_s=self._retry_s,
            )
            return None

    def _reader(self) -> asyncio.Task[StoreReader]:
        """The reader, opened once in a task of its own that a timed-out HELLO leaves running."""
        opening = self._opening
        if opening is None or (opening.done() and opening.exception() is not None):
            opening = self._opening = asyncio.ensure_future(self._open_reader())
        return opening

    async def close(self) -> None:
        opening, self._opening = self._opening, None
        if opening is None:
            return
        opening.cancel()  # nothing if it is done
        await asyncio.wait([opening])  # our own cancellation still reaches us here
        if not opening.cancelled() and opening.exception() is None:
            await opening.result().close()


async def welcome_seq(outbox_next: int, store: StoreSeq | None, terminal_id: int) -> int:
    """One more than the highest seq the outbox or the store holds (0 if neither holds any)."""
    if store is None:
        return outbox_next
    highest = await store.highest(terminal_id)
    return outbox_next if highest is None else max(outbox_next, highest + 1)
