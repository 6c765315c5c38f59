"""The TCP benchmark's load generator: one lean asyncio connection per terminal, no simulator.

Frames are encoded before the clock starts (``bench.fleet``); each link keeps
``window`` frames unanswered and times every ACK. The session rules (HELLO
first, then every answer the ACK of the oldest frame in flight) are the
protocol's own: each link drives a :class:`protocols.terminal_session.TerminalSession`.
Any answer that breaks them, a NAK, a closed connection or 30 s of silence ends
that terminal's run with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench import procs
from bench.errors import BenchError
from bench.fleet import PlannedFrame, TerminalSpec, hello
from bench.results import TerminalRun
from firmware_sim.harness import GatewayProcess
from protocols.errors import GatewayViolation
from protocols.frames import Frame, Welcome, encode
from protocols.session import Transport
from protocols.stream import Event, FrameStream
from protocols.terminal_session import Acked, TerminalSession, Welcomed

READ_SIZE = 65536
ANSWER_TIMEOUT_S = 30.0
CONNECT_CONCURRENCY = 100


class Link:
    """One terminal's connection: frames out, the session's reading of the answers in."""

    __slots__ = ("_reader", "_stream", "_writer", "session", "spec")

    def __init__(
        self, spec: TerminalSpec, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.spec = spec
        self.session = TerminalSession(Transport.TCP, spec.terminal_id)
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
            greeting = hello(spec, queued)
            link.send(greeting, encode(greeting, spec.key))
            _, events = await link.receive()
            answer = link.session.receive(events[0]) if len(events) == 1 else None
            if not isinstance(answer, Welcomed):
                raise BenchError(f"terminal {spec.terminal_id}: HELLO answered by {events!r}")
        except GatewayViolation as exc:
            await link.close()
            raise BenchError(f"terminal {spec.terminal_id}: {exc}") from exc
        except BaseException:
            await link.close()
            raise
        return link, answer.welcome

    @property
    def closed_by_peer(self) -> bool:
        return self._reader.at_eof()

    def send(self, frame: Frame, data: bytes, at: float = 0.0) -> None:
        """Write ``data``, the encoding of ``frame``, which the session takes as sent ``at``."""
        self.session.send(frame, at=at)
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


def take_answers(session: TerminalSession, events: Sequence[Event], latencies: list[float],
                 arrived: float) -> str | None:  # fmt: skip
    """Append one latency per ACK, in order; the problem with the first answer that is not one."""
    for event in events:
        try:
            answer = session.receive(event)
        except GatewayViolation as exc:
            return str(exc)
        if not isinstance(answer, Acked) or answer.sent is None:
            return f"expected the ACK of the oldest frame in flight, got {event!r}"
        latencies.append(arrived - answer.sent.at)
    return None


async def pump(link: Link, frames: Sequence[PlannedFrame], window: int) -> TerminalRun:
    """Send ``frames`` keeping ``window`` unanswered; time each ACK; stop at a wrong one."""
    sent = 0
    latencies: list[float] = []
    first_send = last_ack = time.perf_counter()
    error: str | None = None
    try:
        while error is None and len(latencies) < len(frames):
            while sent < len(frames) and sent - len(latencies) < window:
                link.send(frames[sent].frame, frames[sent].data, at=time.perf_counter())
                sent += 1
            await link.flush()
            last_ack, events = await link.receive()
            error = take_answers(link.session, events, latencies, last_ack)
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
