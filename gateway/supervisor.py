"""One supervisor for the gateway's long-running parts.

Each part is a named task. :meth:`Supervisor.serve` returns when asked to stop
and raises the error of the first part that failed; a part that returns has
simply finished (the registry import, once done). The composition root then
stops the parts one by one, in its documented order, with :meth:`stop`.

Cancellation is never swallowed: stopping a part cancels it and waits for it
with :func:`asyncio.wait`, which raises only if the caller itself is
cancelled; the part's own CancelledError stays inside the part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("gateway.supervisor")


class Supervisor:
    def __init__(self) -> None:
        self._parts: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        if name in self._parts:
            work.close()
            raise ValueError(f"part {name!r} is already running")
        self._parts[name] = asyncio.create_task(work, name=name)

    def running(self, name: str) -> bool:
        task = self._parts.get(name)
        return task is not None and not task.done()

    async def serve(self, stop: asyncio.Event) -> None:
        """Wait until ``stop`` is set; raise the error of a part that failed first."""
        stopped = asyncio.create_task(stop.wait(), name="stop")
        try:
            while not stop.is_set():
                waiting = {t for t in self._parts.values() if not t.done()}
                await asyncio.wait({stopped, *waiting}, return_when=asyncio.FIRST_COMPLETED)
                for name, task in list(self._parts.items()):
                    error = task.exception() if task.done() and not task.cancelled() else None
                    if error is not None:
                        del self._parts[name]  # raised here, not logged again by stop()
                        log.error("part_failed", part=name, error=repr(error))
                        raise error
        finally:
            stopped.cancel()
            await asyncio.wait({stopped})

    async def wait(self, name: str, timeout_s: float) -> bool:
        """Give a part ``timeout_s`` to return by itself; True if it did (or is not running)."""
        task = self._parts.get(name)
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        return bool(done)

    async def stop(self, name: str) -> None:
        """Cancel a part and wait until it has ended; log an error it ended with."""
        task = self._parts.pop(name, None)
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.warning("part_stopped_with_error", part=name, error=repr(task.exception()))

    async def stop_all(self) -> None:
        for name in list(self._parts):
            await self.stop(name)
