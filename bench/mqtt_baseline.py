"""The MQTT benchmark's baseline: a bare aiomqtt subscriber that only counts, in its own process.

QoS 1 on ``smiley/v1/+/up``, auto-ack, Receive Maximum = ``max_in_flight``; it
takes the same pre-encoded frames from the same publishers as the gateway
does, whose window is freed by the broker's PUBACK here (nothing else
answers). Rate = messages x records / (last receipt - first publish).
Run as ``python -m bench.mqtt_baseline SPEC`` by :class:`SubscriberProcess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from bench import procs
from bench.errors import BenchError
from bench.fleet import PlannedFrame, TerminalSpec
from bench.mqtt_load import (
    ANSWER_TIMEOUT_S,
    TerminalLoad,
    connected,
    payload_of,
    publish_frames,
    v5_client,
)
from firmware_sim.harness import PrivateMosquitto

REPO = Path(__file__).resolve().parents[1]
UP_FILTER = "smiley/v1/+/up"
SUBSCRIBER_START_TIMEOUT_S = 30.0
BASELINE_SETTLE_S = 0.2


class BaselineShape(Protocol):
    """What the baseline needs of the benchmark's options."""

    @property
    def window(self) -> int: ...
    @property
    def max_in_flight(self) -> int: ...
    @property
    def baseline_repeats(self) -> int: ...
    @property
    def frames(self) -> int: ...
    @property
    def records_per_frame(self) -> int: ...


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
    """``python -m bench.mqtt_baseline SPEC`` as a child process."""

    def __init__(self, spec: SubscriberSpec, log: Path) -> None:
        self.spec = spec
        self.log = log
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SubscriberProcess:
        with self.log.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.mqtt_baseline", json.dumps(asdict(self.spec)),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log,
                cwd=REPO,
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
    options: BaselineShape,
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
        broker_cpu = procs.read_cpu_seconds(broker.process.pid)
        own_cpu, machine_cpu = time.process_time(), procs.machine_cpu_seconds()
        first = time.monotonic()
        outcomes = await asyncio.gather(
            *(publish_frames(c, d, False) for c, d in zip(publishers, loads, strict=True)),
            return_exceptions=True,
        )
        published = time.monotonic() - first
        errors += [f"baseline publisher: {o!r}" for o in outcomes if o is not None]
        result = await subscriber.result()
        own_cpu = time.process_time() - own_cpu
        broker_cpu = procs.read_cpu_seconds(broker.process.pid) - broker_cpu
        machine_cpu = procs.machine_cpu_seconds() - machine_cpu
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
    options: BaselineShape,
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


if __name__ == "__main__":
    asyncio.run(count_messages(SubscriberSpec(**json.loads(sys.argv[1]))))
