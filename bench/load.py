"""The TCP benchmark's load generator: one lean asyncio connection per terminal, no simulator.

Frames are encoded before the clock starts (``bench.fleet``); each link keeps
``window`` frames unanswered and times every ACK. Any answer that is not the
ACK of the right seq, a closed connection or 30 s of silence ends that
terminal's run with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench import procs
from bench.errors import BenchError
from bench.fleet import PlannedFrame, TerminalSpec, hello_bytes
from bench.results import TerminalRun
from firmware_sim.harness import GatewayProcess
from protocols.constants import FrameType
from protocols.frames import Ack, Welcome
from protocols.stream import Event, FrameStream

READ_SIZE = 65536
ANSWER_TIMEOUT_S = 30.0
CONNECT_CONCURRENCY = 100


class Link:
    """One terminal's connection: raw frames out, decoded answers in (lean, no simulator)."""

    __slots__ = ("_reader", "_stream", "_writer", "spec")

    def __init__(
        self, spec: TerminalSpec, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.spec = spec
        self._reader = reader
        self._writer = writer
        self._stream = FrameStream({spec.terminal_id: spec.key}.get)

    @classmethod
    async def open(cls, port: int, spec: TerminalSpec, queued: int) -> tuple[Link, Welcome]:
        """Connect, send HELLO, return the link once WELCOME came."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), ANSWER_TIMEOUT_S
        )
        link = cls(spec, reader, writer)
        try:
            link.send(hello_bytes(spec, queued))
            _, events = await link.receive()
            if len(events) != 1 or not isinstance(events[0], Welcome):
                raise BenchError(f"terminal {spec.terminal_id}: HELLO answered by {events!r}")
        except BaseException:
            await link.close()
            raise
        return link, events[0]

    @property
    def closed_by_peer(self) -> bool:
        return self._reader.at_eof()

    def send(self, data: bytes) -> None:
        self._writer.write(data)

    async def flush(self) -> None:
        await self._writer.drain()

    async def receive(self) -> tuple[float, list[Event]]:
        """The next decoded answers and the time their bytes arrived."""
        while True:
            data = await asyncio.wait_for(self._reader.read(READ_SIZE), ANSWER_TIMEOUT_S)
            arrived = time.perf_counter()
            if not data:
                raise EOFError("connection closed by the gateway")
            events = self._stream.feed(data)
            if events:
                return arrived, events

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


def ack_problem(event: Event, expected_seq: int) -> str | None:
    """Why ``event`` is not the ACK of a PRESSES frame ending at ``expected_seq``."""
    if (
        isinstance(event, Ack)
        and event.acked_type == FrameType.PRESSES
        and event.acked_seq == expected_seq
    ):
        return None
    return f"expected ACK of PRESSES up to seq {expected_seq}, got {event!r}"


def match_answers(
    events: Sequence[Event],
    frames: Sequence[PlannedFrame],
    sent_at: Sequence[float],
    arrived: float,
    latencies: list[float],
) -> str | None:
    """Append one latency per correct ACK, in order; the problem with the first wrong one."""
    for event in events:
        if len(latencies) == len(sent_at):
            return f"answer to no frame in flight: {event!r}"
        problem = ack_problem(event, frames[len(latencies)].last_seq)
        if problem is not None:
            return problem
        latencies.append(arrived - sent_at[len(latencies)])
    return None


async def pump(link: Link, frames: Sequence[PlannedFrame], window: int) -> TerminalRun:
    """Send ``frames`` keeping ``window`` unanswered; time each ACK; stop at a wrong one."""
    sent_at: list[float] = []
    latencies: list[float] = []
    first_send = last_ack = time.perf_counter()
    error: str | None = None
    try:
        while error is None and len(latencies) < len(frames):
            while len(sent_at) < len(frames) and len(sent_at) - len(latencies) < window:
                sent_at.append(time.perf_counter())
                link.send(frames[len(sent_at) - 1].data)
            await link.flush()
            last_ack, events = await link.receive()
            error = match_answers(events, frames, sent_at, last_ack, latencies)
    except (TimeoutError, EOFError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    acked = len(latencies)
    return TerminalRun(
        link.spec.terminal_id,
        acked,
        sum(len(f.records) for f in frames[:acked]),
        tuple(latencies),
        first_send,
        last_ack,
        None if error is None else f"terminal {link.spec.terminal_id}: {error}",
    )


async def open_links(
    port: int, fleet: Sequence[TerminalSpec], queued: int
) -> tuple[list[Link], list[str]]:
    """Connect and greet every terminal (at most CONNECT_CONCURRENCY at once)."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(spec: TerminalSpec) -> Link:
        async with gate:
            link, welcome = await Link.open(port, spec, queued)
        if welcome.next_seq != 0:
            await link.close()
            raise BenchError(f"terminal {spec.terminal_id}: fresh gateway said next_seq != 0")
        return link

    outcomes = await asyncio.gather(*(one(s) for s in fleet), return_exceptions=True)
    links = [o for o in outcomes if isinstance(o, Link)]
    errors = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    return links, errors


async def close_links(links: Sequence[Link]) -> None:
    await asyncio.gather(*(link.close() for link in links))


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    runs: tuple[TerminalRun, ...]
    errors: tuple[str, ...]
    gateway_cpu_s: float
    generator_cpu_s: float


async def drive_load(
    gateway: GatewayProcess,
    plans: dict[int, tuple[PlannedFrame, ...]],
    fleet: Sequence[TerminalSpec],
    window: int,
) -> LoadOutcome:
    queued = sum(len(f.records) for f in next(iter(plans.values())))
    links, errors = await open_links(gateway.port, fleet, queued)
    if errors:
        await close_links(links)
        raise BenchError(f"handshakes failed: {errors[:3]}")
    gateway_cpu = procs.cpu_seconds(gateway)
    own_cpu = time.process_time()
    runs = await asyncio.gather(*(pump(k, plans[k.spec.terminal_id], window) for k in links))
    own_cpu = time.process_time() - own_cpu
    gateway_cpu = procs.cpu_seconds(gateway) - gateway_cpu
    await close_links(links)
    run_errors = tuple(r.error for r in runs if r.error is not None)
    return LoadOutcome(tuple(runs), run_errors, gateway_cpu, own_cpu)
