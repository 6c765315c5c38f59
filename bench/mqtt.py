"""MQTT benchmark of the real gateway process: durable presses/s through a broker.

Run from the repository root::

    .venv/bin/python bench/mqtt.py [--terminals 50] [--frames-per-terminal 200]
                                   [--records-per-frame 50] [--json OUT]

One private Mosquitto (``tests/brokers.py``, on a free port, persistence on)
serves every phase; the shared broker on 1883 is never touched.

1. baseline, first: a bare aiomqtt subscriber in its own process (QoS 1 on
   ``smiley/v1/+/up``, auto-ack, Receive Maximum = ``--max-in-flight``, only
   counting) takes the same pre-encoded PRESSES frames from the same
   publishers (whose window is freed by the broker's PUBACK here, as nothing
   else answers). Rate = messages x records / (last receipt - first publish);
   median of ``--baseline-repeats``. It runs before the gateway ever connects,
   so the gateway's persistent session does not exist yet and queues nothing.
2. gateway: ``smiley-gateway run`` as a subprocess with an ``[mqtt]`` section
   for the broker. Once a HEARTBEAT probe is ACKed on its down topic, every
   terminal publishes its PRESSES frames (QoS 1, consecutive seqs) keeping
   ``--window`` frames without an ACK; one client reads every ACK on
   ``smiley/v1/+/down``. Durable presses/s = ACKed presses / (last ACK - first
   publish). Each ACK must be the ACK of a frame in flight.
3. store: after SIGTERM the central store must hold exactly the ACKed presses.

Targets are printed as PASS/FAIL; the exit status is 1 only when something
broke (a wrong or missing ACK, presses lost or doubled, a baseline subscriber
that missed messages, a gateway that would not start or stop cleanly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.tcp import (
    ANSWER_TIMEOUT_S,
    BenchError,
    Check,
    GatewayFiles,
    GatewayProcess,
    Latency,
    Memory,
    PlannedFrame,
    StoreCheck,
    TerminalRun,
    TerminalSpec,
    clean_env,
    count_rows,
    make_fleet,
    percentile,
    plan_frames,
    raise_fd_limit,
    read_cpu_seconds,
    registry_toml,
    store_mismatches,
    wait_forwarded,
    write_gateway_files,
)
from protocols.constants import FrameType
from protocols.errors import DecodeError
from protocols.frames import Ack, Heartbeat, decode, encode
from tests.brokers import PrivateMosquitto

SCRIPT = Path(__file__).resolve()
UP_FILTER = "smiley/v1/+/up"
DOWN_FILTER = "smiley/v1/+/down"
GATEWAY_CLIENT_ID = "bench-gateway"
SUBSCRIBER_FLAG = "--baseline-subscriber"
PROBE_TIMEOUT_S = 30.0
PROBE_RETRY_S = 0.5
SUBSCRIBER_START_TIMEOUT_S = 30.0
BASELINE_SETTLE_S = 0.2
TARGET_BASELINE_RATIO = 0.70
# The store deployment's settings that bear on throughput (deploy/mosquitto/smiley.conf):
# a save every 60 s instead of every second, and 200 QoS 1 messages in flight per
# v3.1.1 client. Later lines override the test config's defaults.
BROKER_EXTRA_CONFIG = """
allow_anonymous true
autosave_interval 60
autosave_on_changes false
max_inflight_messages 200
"""


def machine_cpu_seconds() -> float:
    """CPU time used so far by everything on the machine, all CPUs (from /proc/stat)."""
    first = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0]
    ticks = [int(v) for v in first.split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def up_topic(terminal_id: int) -> str:
    return f"smiley/v1/{terminal_id}/up"


def down_topic(terminal_id: int) -> str:
    return f"smiley/v1/{terminal_id}/down"


def topic_id(topic: str) -> int | None:
    """The terminal id of ``smiley/v1/{id}/...``, or None."""
    parts = topic.split("/")
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


# ---------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Options:
    terminals: int
    records_per_frame: int
    frames_per_terminal: int
    window: int
    max_in_flight: int
    baseline_repeats: int
    seed: int
    json_path: Path | None
    keep: bool

    @property
    def frames(self) -> int:
        return self.terminals * self.frames_per_terminal

    @property
    def presses(self) -> int:
        return self.frames * self.records_per_frame


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/mqtt.py", description="MQTT benchmark of the smiley-gateway process."
    )
    parser.add_argument("--terminals", type=int, default=50, help="publishing terminals")
    parser.add_argument("--records-per-frame", type=int, default=50, help="records per PRESSES")
    parser.add_argument("--frames-per-terminal", type=int, default=200, help="PRESSES per terminal")
    parser.add_argument("--window", type=int, default=4, help="frames per terminal without ACK")
    parser.add_argument("--max-in-flight", type=int, default=200, help="gateway mqtt.max_in_flight")
    parser.add_argument("--baseline-repeats", type=int, default=3, help="median of N runs")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated presses")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (path printed)")
    args = parser.parse_args(argv)
    options = Options(**vars(args))
    if min(options.terminals, options.frames_per_terminal, options.window) < 1:
        parser.error("--terminals, --frames-per-terminal and --window must be at least 1")
    if not 1 <= options.records_per_frame <= 680:
        parser.error("--records-per-frame must be 1..680")
    if not 1 <= options.max_in_flight <= 65535:
        parser.error("--max-in-flight must be 1..65535 (MQTT Receive Maximum)")
    if options.baseline_repeats < 1:
        parser.error("--baseline-repeats must be at least 1")
    return options


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Throughput:
    presses: int
    frames: int
    wall_s: float
    presses_per_s: float
    latency: Latency
    in_flight_presses: int
    gateway_cpu_s: float
    gateway_cpu_us_per_press: float
    broker_cpu_s: float
    generator_cpu_s: float
    others_cpu_s: float
    encode_s: float
    subscribed_after_s: float
    memory: Memory
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BaselineRun:
    messages: int
    payload_bytes: int
    presses: int
    wall_s: float
    published_s: float
    presses_per_s: float
    subscriber_cpu_s: float
    broker_cpu_s: float
    generator_cpu_s: float
    others_cpu_s: float
    error: str | None


@dataclass(frozen=True, slots=True)
class Baseline:
    """The median rate of ``runs``; every run is kept for the JSON."""

    presses_per_s: float
    messages_per_s: float
    runs: tuple[BaselineRun, ...]


@dataclass(frozen=True, slots=True)
class Report:
    options: dict[str, object]
    cpus: int
    throughput: Throughput
    store: StoreCheck
    baseline: Baseline
    ratio: float
    checks: tuple[Check, ...]
    problems: tuple[str, ...]


# ---------------------------------------------------------------- clients


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
        "spec",
        "topic",
        "window",
        "window_size",
    )

    def __init__(self, spec: TerminalSpec, frames: Sequence[PlannedFrame], window: int) -> None:
        self.spec = spec
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
            frame = decode(payload, self.keys.get)
        except DecodeError as exc:
            self.fail(f"terminal {terminal_id}: undecodable answer: {exc}")
            return
        index = None
        if isinstance(frame, Ack) and frame.acked_type == FrameType.PRESSES:
            index = load.in_flight.pop(frame.acked_seq, None)
        if index is None or frame.terminal_id != terminal_id:
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


# ---------------------------------------------------------------- the gateway phase


def write_mqtt_gateway(
    root: Path, registry: Path, broker_port: int, max_in_flight: int
) -> GatewayFiles:
    """bench/tcp.py's configuration (its [tcp] port tells when the process is up) + [mqtt]."""
    files = write_gateway_files(root, registry, 16)
    with files.config.open("a", encoding="utf-8") as config:
        config.write(
            f"""[mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
client_id = "{GATEWAY_CLIENT_ID}"
max_in_flight = {max_in_flight}
reconnect_max_s = 1
"""
        )
    return files


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
    options: Options,
    probe_id: int,
) -> LoadOutcome:
    loads = [TerminalLoad(s, plans[s.terminal_id], options.window) for s in fleet]
    publishers = [v5_client(port, f"bench-load-{s.terminal_id}") for s in fleet]
    listener = v5_client(port, "bench-load-acks")
    book = AckBook(loads, probe_id)
    async with connected([*publishers, listener]):
        await listener.subscribe(DOWN_FILTER, qos=1)
        gateway_cpu, broker_cpu = gateway.cpu_seconds(), read_cpu_seconds(broker_pid)
        own_cpu, machine_cpu = time.process_time(), machine_cpu_seconds()
        book.last_progress = time.perf_counter()
        listening = guarded(book, "ACK listener", collect_answers(listener, book))
        tasks = [asyncio.create_task(listening)]
        tasks += [
            asyncio.create_task(guarded(book, load.topic, publish_frames(client, load, True)))
            for client, load in zip(publishers, loads, strict=True)
        ]
        await wait_for_answers(book)
        own_cpu = time.process_time() - own_cpu
        gateway_cpu = gateway.cpu_seconds() - gateway_cpu
        broker_cpu = read_cpu_seconds(broker_pid) - broker_cpu
        others = machine_cpu_seconds() - machine_cpu - own_cpu - gateway_cpu - broker_cpu
        others = max(0.0, others)  # /proc/stat and /proc/PID/stat round differently
        await cancel_all(tasks)
    runs = tuple(load.run() for load in loads)
    return LoadOutcome(runs, tuple(book.errors), gateway_cpu, broker_cpu, own_cpu, others)


def summarize_load(
    outcome: LoadOutcome, options: Options, encode_s: float, probe_s: float, memory: Memory
) -> Throughput:
    runs = outcome.runs
    presses = sum(r.acked_presses for r in runs)
    wall = max(r.last_ack for r in runs) - min(r.first_send for r in runs)
    latencies = sorted(lat for r in runs for lat in r.latencies_s)
    return Throughput(
        presses=presses,
        frames=sum(r.acked_frames for r in runs),
        wall_s=wall,
        presses_per_s=presses / wall if wall > 0 else 0.0,
        latency=Latency(
            p50_ms=percentile(latencies, 0.50) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            max_ms=(latencies[-1] if latencies else 0.0) * 1000,
        ),
        in_flight_presses=options.terminals * options.window * options.records_per_frame,
        gateway_cpu_s=outcome.gateway_cpu_s,
        gateway_cpu_us_per_press=outcome.gateway_cpu_s * 1e6 / max(1, presses),
        broker_cpu_s=outcome.broker_cpu_s,
        generator_cpu_s=outcome.generator_cpu_s,
        others_cpu_s=outcome.others_cpu_s,
        encode_s=encode_s,
        subscribed_after_s=probe_s,
        memory=memory,
        errors=outcome.errors,
    )


@dataclass(frozen=True, slots=True)
class GatewayPhase:
    throughput: Throughput
    store: StoreCheck


async def gateway_phase(
    options: Options,
    broker: PrivateMosquitto,
    plans: dict[int, tuple[PlannedFrame, ...]],
    fleet: Sequence[TerminalSpec],
    probe_spec: TerminalSpec,
    root: Path,
    registry: Path,
    encode_s: float,
) -> GatewayPhase:
    assert broker.process is not None
    files = write_mqtt_gateway(root / "gateway", registry, broker.port, options.max_in_flight)
    with GatewayProcess(files) as gateway:
        probe_s = await probe(broker.port, probe_spec)
        outcome = await drive_load(
            broker.port, gateway, broker.process.pid, plans, fleet, options, probe_spec.terminal_id
        )
        acked = sum(r.acked_presses for r in outcome.runs)
        lag = wait_forwarded(gateway, acked, max(r.last_ack for r in outcome.runs))
        memory = gateway.memory() if gateway.alive else Memory(0.0, 0.0)
        exit_code = gateway.stop()
    mismatches = store_mismatches(files.central_db, outcome.runs)
    store = StoreCheck(
        central_presses=count_rows(files.central_db, "press"),
        forwarded_after_last_ack_s=lag,
        outbox_left=count_rows(files.outbox_db, "press"),
        exact=not mismatches,
        mismatched_terminals=mismatches,
        gateway_exit=exit_code,
    )
    return GatewayPhase(summarize_load(outcome, options, encode_s, probe_s, memory), store)


# ---------------------------------------------------------------- the bare aiomqtt baseline


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    port: int
    client_id: str
    receive_maximum: int
    messages: int


@dataclass(frozen=True, slots=True)
class SubscriberResult:
    """What the subscriber process counted; times are time.monotonic(), shared by processes."""

    messages: int
    payload_bytes: int
    last_receipt: float
    cpu_s: float


async def count_messages(spec: SubscriberSpec) -> None:
    """The baseline subscriber (its own process): print ``ready``, count, print the result."""
    async with v5_client(spec.port, spec.client_id, spec.receive_maximum) as client:
        await client.subscribe(UP_FILTER, qos=1)
        print("ready", flush=True)
        cpu = time.process_time()
        count = size = 0
        last = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(subscriber_patience_s(spec.messages)):
                async for message in client.messages:
                    last = time.monotonic()
                    count += 1
                    size += len(payload_of(message))
                    if count == spec.messages:
                        break
        cpu = time.process_time() - cpu
    print(json.dumps(asdict(SubscriberResult(count, size, last, cpu))), flush=True)


def subscriber_patience_s(messages: int) -> float:
    """How long the subscriber waits for all messages before it reports what it got."""
    return ANSWER_TIMEOUT_S + messages / 100


class SubscriberProcess:
    """``bench/mqtt.py --baseline-subscriber SPEC`` as a child process."""

    def __init__(self, spec: SubscriberSpec, log: Path) -> None:
        self.spec = spec
        self.log = log
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SubscriberProcess:
        with self.log.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, str(SCRIPT), SUBSCRIBER_FLAG,
                json.dumps(asdict(self.spec)),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log,
                env=clean_env(),
            )  # fmt: skip
        line = await self._line(SUBSCRIBER_START_TIMEOUT_S)
        if line != "ready":
            raise BenchError(f"the baseline subscriber did not start: {line!r}\n{self._log()}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        process = self._running()
        if process.returncode is None:
            process.kill()
            await process.wait()

    async def result(self) -> SubscriberResult:
        """The count, once it reached the expected messages or the subscriber gave up."""
        line = await self._line(subscriber_patience_s(self.spec.messages) + 5)
        try:
            return SubscriberResult(**json.loads(line))
        except (ValueError, TypeError):
            raise BenchError(f"the baseline subscriber said {line!r}\n{self._log()}") from None

    def _running(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise BenchError("the baseline subscriber was not started")
        return self._process

    async def _line(self, wait_s: float) -> str:
        stdout = self._running().stdout
        assert stdout is not None
        try:
            data = await asyncio.wait_for(stdout.readline(), wait_s)
        except TimeoutError:
            raise BenchError(f"the baseline subscriber was silent for {wait_s:.0f} s") from None
        return data.decode("utf-8", errors="replace").strip()

    def _log(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-2000:]


async def baseline_run(
    options: Options,
    broker: PrivateMosquitto,
    loads: Sequence[TerminalLoad],
    root: Path,
    repeat: int,
) -> BaselineRun:
    """The subscriber process takes every frame of ``loads``, published as in the load."""
    assert broker.process is not None
    expected_bytes = sum(len(f.data) for load in loads for f in load.frames)
    spec = SubscriberSpec(
        broker.port, f"bench-baseline-{repeat}", options.max_in_flight, options.frames
    )
    publishers = [v5_client(broker.port, f"bench-base{repeat}-{d.spec.terminal_id}") for d in loads]
    errors: list[str] = []
    subscriber = SubscriberProcess(spec, root / f"baseline-{repeat}.log")
    async with subscriber, connected(publishers):
        await asyncio.sleep(BASELINE_SETTLE_S)
        broker_cpu = read_cpu_seconds(broker.process.pid)
        own_cpu, machine_cpu = time.process_time(), machine_cpu_seconds()
        first = time.monotonic()
        outcomes = await asyncio.gather(
            *(publish_frames(c, d, False) for c, d in zip(publishers, loads, strict=True)),
            return_exceptions=True,
        )
        published = time.monotonic() - first
        errors += [f"baseline publisher: {o!r}" for o in outcomes if o is not None]
        result = await subscriber.result()
        own_cpu = time.process_time() - own_cpu
        broker_cpu = read_cpu_seconds(broker.process.pid) - broker_cpu
        machine_cpu = machine_cpu_seconds() - machine_cpu
    if result.messages != options.frames or result.payload_bytes != expected_bytes:
        errors.append(
            f"baseline subscriber got {result.messages} messages, {result.payload_bytes} bytes; "
            f"expected {options.frames}, {expected_bytes}"
        )
    presses = result.messages * options.records_per_frame
    wall = result.last_receipt - first
    return BaselineRun(
        messages=result.messages,
        payload_bytes=result.payload_bytes,
        presses=presses,
        wall_s=wall,
        published_s=published,
        presses_per_s=presses / wall if wall > 0 else 0.0,
        subscriber_cpu_s=result.cpu_s,
        broker_cpu_s=broker_cpu,
        generator_cpu_s=own_cpu,
        others_cpu_s=max(0.0, machine_cpu - own_cpu - broker_cpu - result.cpu_s),
        error="; ".join(errors) or None,
    )


async def run_baseline(
    options: Options,
    broker: PrivateMosquitto,
    plans: dict[int, tuple[PlannedFrame, ...]],
    fleet: Sequence[TerminalSpec],
    root: Path,
) -> Baseline:
    runs = []
    for repeat in range(1, options.baseline_repeats + 1):
        loads = [TerminalLoad(s, plans[s.terminal_id], options.window) for s in fleet]
        runs.append(await baseline_run(options, broker, loads, root, repeat))
    rate = statistics.median(r.presses_per_s for r in runs)
    return Baseline(rate, rate / options.records_per_frame, tuple(runs))


# ---------------------------------------------------------------- report


def evaluate(options: Options, phase: GatewayPhase, baseline: Baseline) -> Report:
    rate = phase.throughput.presses_per_s
    ratio = rate / baseline.presses_per_s if baseline.presses_per_s else 0.0
    checks = (
        Check(
            f"durable presses/s >= {TARGET_BASELINE_RATIO:.2f} x bare aiomqtt subscriber",
            ratio >= TARGET_BASELINE_RATIO,
            f"{ratio:.2f}",
        ),
    )
    return Report(
        options={k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        cpus=os.cpu_count() or 0,
        throughput=phase.throughput,
        store=phase.store,
        baseline=baseline,
        ratio=ratio,
        checks=checks,
        problems=problems_of(options, phase, baseline),
    )


def problems_of(options: Options, phase: GatewayPhase, baseline: Baseline) -> tuple[str, ...]:
    """What broke (as opposed to a missed target); any of these makes the exit status 1."""
    t, s = phase.throughput, phase.store
    problems = list(t.errors[:10])
    if t.presses != options.presses:
        problems.append(f"{t.presses} of {options.presses} presses ACKed")
    problems.extend(s.mismatched_terminals[:10])
    if s.central_presses != t.presses:
        problems.append(f"central store holds {s.central_presses}, ACKed {t.presses}")
    if s.outbox_left:
        problems.append(f"{s.outbox_left} presses left in the outbox after shutdown")
    if s.gateway_exit != 0:
        problems.append(f"gateway exit status after SIGTERM: {s.gateway_exit}")
    problems.extend(r.error for r in baseline.runs if r.error is not None)
    return tuple(problems)


def render(report: Report) -> str:
    lines = ["smiley-gateway MQTT benchmark"]
    lines += _render_load(report.options, report.throughput, report.cpus)
    lines += _render_baseline(report)
    lines += _render_store(report.store)
    lines += [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.value}" for c in report.checks]
    lines += [f"BROKEN  {p}" for p in report.problems]
    return "\n".join(lines)


def _share(cpu_s: float, wall_s: float) -> str:
    return f"{100 * cpu_s / wall_s:.0f}% of one core" if wall_s > 0 else "n/a"


def _render_load(o: dict[str, object], t: Throughput, cpus: int) -> list[str]:
    queueing_ms = 1000 * t.in_flight_presses / t.presses_per_s if t.presses_per_s else 0.0
    return [
        f"  load          {o['terminals']} terminals x {o['frames_per_terminal']} frames x "
        f"{o['records_per_frame']} records, QoS 1, window {o['window']} frames, max_in_flight "
        f"{o['max_in_flight']}; one aiomqtt client per terminal + one on {DOWN_FILTER}",
        f"                (frames pre-encoded in {t.encode_s:.1f} s; gateway subscribed "
        f"{t.subscribed_after_s:.2f} s after start; neither timed)",
        f"  throughput    {t.presses:,} presses ({t.frames:,} frames) ACKed in {t.wall_s:.2f} s"
        f" = {t.presses_per_s:,.0f} durable presses/s",
        f"  ACK latency   p50 {t.latency.p50_ms:.1f} ms   p99 {t.latency.p99_ms:.1f} ms   "
        f"max {t.latency.max_ms:.1f} ms (publish -> its ACK read)",
        f"                {t.in_flight_presses:,} presses in flight: queueing alone gives "
        f"in-flight / rate = {queueing_ms:.0f} ms",
        f"  gateway       CPU {t.gateway_cpu_s:.1f} s ({_share(t.gateway_cpu_s, t.wall_s)}), "
        f"{t.gateway_cpu_us_per_press:.1f} us per press; peak RSS (VmHWM) "
        f"{t.memory.hwm_mb:.1f} MB, RSS at end {t.memory.rss_mb:.1f} MB",
        f"  broker        CPU {t.broker_cpu_s:.1f} s ({_share(t.broker_cpu_s, t.wall_s)})",
        f"  generator     CPU {t.generator_cpu_s:.1f} s ({_share(t.generator_cpu_s, t.wall_s)})",
        f"  others        CPU {t.others_cpu_s:.1f} s ({_share(t.others_cpu_s, t.wall_s)}) used by "
        f"processes outside the bench, of {cpus} CPUs",
    ]


def _render_baseline(report: Report) -> list[str]:
    b = report.baseline
    runs = " / ".join(f"{r.presses_per_s / 1000:,.0f}k" for r in b.runs)
    median = sorted(b.runs, key=lambda r: r.presses_per_s)[len(b.runs) // 2]
    return [
        f"  baseline      bare aiomqtt subscriber (QoS 1, auto-ack, counting): "
        f"{b.presses_per_s:,.0f} presses/s = {b.messages_per_s:,.0f} messages/s "
        f"(median of {runs})",
        f"                median run: {median.messages:,} messages received in "
        f"{median.wall_s:.2f} s (all published in {median.published_s:.2f} s); CPU "
        f"subscriber {_share(median.subscriber_cpu_s, median.wall_s)}, broker "
        f"{_share(median.broker_cpu_s, median.wall_s)}, generator "
        f"{_share(median.generator_cpu_s, median.wall_s)}, others "
        f"{_share(median.others_cpu_s, median.wall_s)}",
        f"  ratio         gateway / baseline = {report.ratio:.2f}",
    ]


def _render_store(s: StoreCheck) -> list[str]:
    lag = s.forwarded_after_last_ack_s
    when = "never (timeout)" if lag is None else f"{lag:.2f} s after the last ACK"
    verdict = "exactly the ACKed ones" if s.exact else "MISMATCH"
    return [
        f"  store         {s.central_presses:,} presses in the central store ({verdict}); "
        f"all forwarded {when}; outbox left {s.outbox_left}; gateway exit {s.gateway_exit}"
    ]


# ---------------------------------------------------------------- main


async def run(options: Options, root: Path) -> Report:
    fleet = make_fleet(options.terminals + 1)  # the last one only probes
    load_fleet, probe_spec = fleet[:-1], fleet[-1]
    registry = root / "terminals.toml"
    registry.write_text(registry_toml(fleet), encoding="utf-8")
    rng = random.Random(options.seed)
    started = time.perf_counter()
    now = int(time.time())
    plans = {s.terminal_id: plan_frames(s, options, rng, now) for s in load_fleet}
    encode_s = time.perf_counter() - started
    broker = PrivateMosquitto(root / "broker", extra_config=BROKER_EXTRA_CONFIG)
    try:
        await broker.start()
    except RuntimeError as exc:
        raise BenchError(f"the private mosquitto did not start: {exc}") from exc
    try:
        # Before the gateway's first connection: its persistent session would queue these.
        baseline = await run_baseline(options, broker, plans, load_fleet, root)
        phase = await gateway_phase(
            options, broker, plans, load_fleet, probe_spec, root, registry, encode_s
        )
    finally:
        await broker.stop()
    return evaluate(options, phase, baseline)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [SUBSCRIBER_FLAG]:
        asyncio.run(count_messages(SubscriberSpec(**json.loads(args[1]))))
        return 0
    options = parse_options(args)
    raise_fd_limit(2 * options.terminals + 256)
    root = Path(tempfile.mkdtemp(prefix="smiley-bench-mqtt-"))
    try:
        report = asyncio.run(run(options, root))
    except BenchError as exc:
        print(f"bench/mqtt.py: {exc}", file=sys.stderr)
        return 1
    finally:
        if options.keep:
            print(f"temp dir kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(render(report))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
