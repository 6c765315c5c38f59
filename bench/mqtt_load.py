"""The MQTT benchmark's load: one aiomqtt client per terminal, one reading every ACK.

Each terminal publishes its pre-encoded PRESSES frames at QoS 1 keeping
``window`` frames unanswered; the answer that frees the window is the
gateway's ACK (``AckBook`` matches each to a frame in flight) or, in the
baseline, the broker's PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench import procs
from bench.errors import BenchError
from bench.fleet import PlannedFrame, TerminalSpec
from bench.results import TerminalRun
from firmware_sim.harness import GatewayProcess
from protocols.constants import FrameType
from protocols.errors import DecodeError, GatewayViolation
from protocols.frames import Ack, Frame, Heartbeat, decode, encode
from protocols.session import Transport
from protocols.terminal_session import Acked, TerminalSession

ANSWER_TIMEOUT_S = 30.0
DOWN_FILTER = "smiley/v1/+/down"
PROBE_TIMEOUT_S = 30.0
PROBE_RETRY_S = 0.5


def up_topic(terminal_id: int) -> str:
    return f"smiley/v1/{terminal_id}/up"


def down_topic(terminal_id: int) -> str:
    return f"smiley/v1/{terminal_id}/down"


def topic_id(topic: str) -> int | None:
    """The terminal id of ``smiley/v1/{id}/...``, or None."""
    parts = topic.split("/")
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


def v5_client(port: int, identifier: str, receive_maximum: int | None = None) -> aiomqtt.Client:
    """A clean-start MQTT v5 client whose session ends with its connection."""
    properties = None
    if receive_maximum is not None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.ReceiveMaximum = receive_maximum
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        properties=properties,
        timeout=ANSWER_TIMEOUT_S,
    )


def payload_of(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return bytes(payload) if isinstance(payload, bytes | bytearray) else b""


@contextlib.asynccontextmanager
async def connected(clients: Sequence[aiomqtt.Client]) -> AsyncIterator[None]:
    """Connect ``clients`` concurrently; disconnect them all on the way out."""
    async with contextlib.AsyncExitStack() as stack:
        await asyncio.gather(*(stack.enter_async_context(c) for c in clients))
        yield


class TerminalLoad:
    """One terminal's frames and what happened to them (sent, in flight, ACKed)."""

    __slots__ = (
        "acked_presses",
        "frames",
        "in_flight",
        "last_ack",
        "latencies",
        "sent_at",
        "session",
        "spec",
        "topic",
        "window",
        "window_size",
    )

    def __init__(self, spec: TerminalSpec, frames: Sequence[PlannedFrame], window: int) -> None:
        self.spec = spec
        self.session = TerminalSession(Transport.MQTT, spec.terminal_id)
        self.frames = frames
        self.topic = up_topic(spec.terminal_id)
        self.window_size = window
        self.window = asyncio.Semaphore(window)
        self.sent_at = [0.0] * len(frames)
        self.in_flight: dict[int, int] = {}  # last seq of a frame -> its index
        self.latencies: list[float] = []
        self.acked_presses = 0
        self.last_ack = 0.0

    def run(self) -> TerminalRun:
        return TerminalRun(
            self.spec.terminal_id,
            len(self.latencies),
            self.acked_presses,
            tuple(self.latencies),
            self.sent_at[0],
            self.last_ack,
            None,  # the AckBook keeps the errors
        )


async def publish_frames(client: aiomqtt.Client, load: TerminalLoad, acked: bool) -> None:
    """Publish every frame at QoS 1 in seq order, keeping ``window`` frames unanswered.

    The answer is the gateway's ACK when ``acked`` (AckBook releases the window),
    else the broker's PUBACK.
    """
    order = iter(range(len(load.frames)))

    async def sender() -> None:
        for index in order:
            await load.window.acquire()
            frame = load.frames[index]
            if acked:
                load.session.send(frame.frame)
                load.in_flight[frame.last_seq] = index
            load.sent_at[index] = time.perf_counter()
            await client.publish(load.topic, frame.data, qos=1)
            if not acked:
                load.window.release()

    await asyncio.gather(*(sender() for _ in range(load.window_size)))


class AckBook:
    """Matches the answers on the down topics to the frames in flight."""

    def __init__(self, loads: Iterable[TerminalLoad], ignored: int) -> None:
        self.loads = {load.spec.terminal_id: load for load in loads}
        self.keys = {tid: load.spec.key for tid, load in self.loads.items()}
        self.ignored = ignored  # the probe terminal: a late heartbeat ACK is harmless
        self.expected = sum(len(load.frames) for load in self.loads.values())
        self.acked = 0
        self.errors: list[str] = []
        self.finished = asyncio.Event()
        self.last_progress = time.perf_counter()

    def fail(self, error: str) -> None:
        self.errors.append(error)
        self.finished.set()

    def answer(self, topic: str, payload: bytes, arrived: float) -> None:
        terminal_id = topic_id(topic)
        if terminal_id == self.ignored:
            return
        load = self.loads.get(terminal_id) if terminal_id is not None else None
        if load is None:
            self.fail(f"answer on {topic!r}, a topic of no terminal in the load")
            return
        try:
            frame: Frame | DecodeError = decode(payload, self.keys.get)
        except DecodeError as exc:
            frame = exc
        try:
            answer = load.session.receive(frame)  # on MQTT it matches no frame: seqs do, here
        except GatewayViolation as exc:
            self.fail(f"terminal {terminal_id}: {exc}")
            return
        index = None
        if isinstance(answer, Acked) and answer.ack.acked_type == FrameType.PRESSES:
            index = load.in_flight.pop(answer.ack.acked_seq, None)
        if index is None:
            self.fail(f"terminal {terminal_id}: expected the ACK of a frame in flight, {frame!r}")
            return
        load.latencies.append(arrived - load.sent_at[index])
        load.acked_presses += len(load.frames[index].records)
        load.last_ack = self.last_progress = arrived
        load.window.release()
        self.acked += 1
        if self.acked == self.expected:
            self.finished.set()


async def collect_answers(client: aiomqtt.Client, book: AckBook) -> None:
    async for message in client.messages:
        book.answer(str(message.topic), payload_of(message), time.perf_counter())


async def guarded(book: AckBook, what: str, work: Awaitable[None]) -> None:
    """Run ``work``; a failure ends the whole load with its reason."""
    try:
        await work
    except Exception as exc:
        book.fail(f"{what}: {type(exc).__name__}: {exc}")


async def wait_for_answers(book: AckBook) -> None:
    """Until every frame is ACKed, something failed, or no ACK came for a while."""
    while not book.finished.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(book.finished.wait(), 1.0)
        silence = time.perf_counter() - book.last_progress
        if not book.finished.is_set() and silence > ANSWER_TIMEOUT_S:
            book.fail(f"no ACK for {silence:.0f} s; {book.acked} of {book.expected} frames ACKed")


async def cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def is_heartbeat_ack(payload: bytes, spec: TerminalSpec) -> bool:
    try:
        answer = decode(payload, {spec.terminal_id: spec.key}.get)
    except DecodeError:
        return False
    return isinstance(answer, Ack) and answer.acked_type == FrameType.HEARTBEAT


async def probe(port: int, spec: TerminalSpec) -> float:
    """Publish a HEARTBEAT until the gateway ACKs it: then it is subscribed. Seconds taken."""
    started = time.perf_counter()
    heartbeat = encode(Heartbeat(spec.terminal_id, int(time.time()), 255, 0, 0, 1), spec.key)
    async with v5_client(port, "bench-probe") as client:
        await client.subscribe(down_topic(spec.terminal_id), qos=1)
        while time.perf_counter() - started < PROBE_TIMEOUT_S:
            await client.publish(up_topic(spec.terminal_id), heartbeat, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_RETRY_S):
                    async for message in client.messages:
                        if is_heartbeat_ack(payload_of(message), spec):
                            return time.perf_counter() - started
    raise BenchError(f"the gateway did not ACK a heartbeat within {PROBE_TIMEOUT_S:.0f} s")


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    runs: tuple[TerminalRun, ...]
    errors: tuple[str, ...]
    gateway_cpu_s: float
    broker_cpu_s: float
    generator_cpu_s: float
    others_cpu_s: float


async def drive_load(
    port: int,
    gateway: GatewayProcess,
    broker_pid: int,
    plans: dict[int, tuple[PlannedFrame, ...]],
    fleet: Sequence[TerminalSpec],
    window: int,
    probe_id: int,
) -> LoadOutcome:
    loads = [TerminalLoad(s, plans[s.terminal_id], window) for s in fleet]
    publishers = [v5_client(port, f"bench-load-{s.terminal_id}") for s in fleet]
    listener = v5_client(port, "bench-load-acks")
    book = AckBook(loads, probe_id)
    async with connected([*publishers, listener]):
        await listener.subscribe(DOWN_FILTER, qos=1)
        gateway_cpu, broker_cpu = procs.cpu_seconds(gateway), procs.read_cpu_seconds(broker_pid)
        own_cpu, machine_cpu = time.process_time(), procs.machine_cpu_seconds()
        book.last_progress = time.perf_counter()
        listening = guarded(book, "ACK listener", collect_answers(listener, book))
        tasks = [asyncio.create_task(listening)]
        tasks += [
            asyncio.create_task(guarded(book, load.topic, publish_frames(client, load, True)))
            for client, load in zip(publishers, loads, strict=True)
        ]
        await wait_for_answers(book)
        own_cpu = time.process_time() - own_cpu
        gateway_cpu = procs.cpu_seconds(gateway) - gateway_cpu
        broker_cpu = procs.read_cpu_seconds(broker_pid) - broker_cpu
        others = procs.machine_cpu_seconds() - machine_cpu - own_cpu - gateway_cpu - broker_cpu
        others = max(0.0, others)  # /proc/stat and /proc/PID/stat round differently
        await cancel_all(tasks)
    runs = tuple(load.run() for load in loads)
    return LoadOutcome(runs, tuple(book.errors), gateway_cpu, broker_cpu, own_cpu, others)
