"""The supervisor: a failing part stops serving with its error; cancellation is never swallowed."""

from __future__ import annotations

import asyncio

import pytest

from gateway.supervisor import Supervisor


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_failing_part_ends_serve_with_its_error() -> None:
    async def broken() -> None:
        await asyncio.sleep(0.01)
        raise LookupError("part broke")

    parts = Supervisor()
    parts.start("steady", forever())
    parts.start("broken", broken())
    with pytest.raises(LookupError, match="part broke"):
        await asyncio.wait_for(parts.serve(asyncio.Event()), 5)
    assert parts.running("steady")  # the others wait for the ordered shutdown
    await parts.stop_all()
    assert not parts.running("steady")


async def test_a_part_that_returns_has_finished_and_serving_goes_on() -> None:
    parts = Supervisor()

    async def once() -> None:
        await asyncio.sleep(0)

    parts.start("once", once())
    parts.start("steady", forever())
    stop = asyncio.Event()
    serving = asyncio.create_task(parts.serve(stop))
    await asyncio.sleep(0.05)
    assert not serving.done()
    assert not parts.running("once")
    stop.set()
    await asyncio.wait_for(serving, 5)
    await parts.stop_all()


async def test_stop_waits_for_the_part_and_keeps_the_callers_cancellation() -> None:
    cleaned = asyncio.Event()
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # a part that takes a while to clean up
            cleaned.set()

    parts = Supervisor()
    parts.start("slow", slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(parts.stop("slow"))
    await asyncio.sleep(0.01)
    stopper.cancel()  # the caller itself is cancelled while it waits
    with pytest.raises(asyncio.CancelledError):
        await stopper
    release.set()
    await asyncio.sleep(0.01)
    assert cleaned.is_set()


async def test_stop_in_order_and_a_part_that_is_off_is_not_started() -> None:
    stopped: list[str] = []

    async def part(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(name)

    parts = Supervisor()
    for name in ("a", "b", "c"):
        parts.start(name, part(name))
    await asyncio.sleep(0)
    for name in ("c", "off", "a"):
        await parts.stop(name)  # "off" was never started: nothing to do
    await parts.stop_all()
    assert stopped == ["c", "a", "b"]


async def test_a_part_name_is_taken_once() -> None:
    parts = Supervisor()
    parts.start("a", forever())
    with pytest.raises(ValueError, match="already running"):
        parts.start("a", forever())
    await parts.stop_all()
