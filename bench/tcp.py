"""TCP benchmark of the real gateway process: durable presses/s, ACK latency, memory.

Run from the repository root::

    .venv/bin/python bench/tcp.py [--terminals 100] [--records-per-frame 50]
                                  [--frames-per-terminal 40] [--idle 1000] [--json OUT]

Phases, each against a fresh ``smiley-gateway run`` subprocess in a temp dir:

1. throughput: every terminal sends HELLO and waits for WELCOME; then all send
   pre-encoded PRESSES frames with a window of unacknowledged frames. Durable
   presses/s = ACKed presses / (last ACK - first send). Each answer must be the
   ACK of the right seq. Afterwards the central store must hold exactly the
   ACKed presses (checked again after SIGTERM, which drains the outbox).
2. baseline: bare stdlib ``sqlite3`` with the outbox's durability (WAL,
   synchronous=FULL) and ``press`` table shape inserts the same rows, (a) one
   transaction per frame and (b) in batches of 5000 rows per transaction.
3. idle: ``--idle`` terminals connect, get WELCOME and stay; the gateway's
   VmRSS is read while they are connected.

Targets are printed as PASS/FAIL; the exit status is 1 only when something
broke (a wrong answer, presses lost or doubled, a gateway that would not start
or stop cleanly), never for a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol
from zoneinfo import ZoneInfo

from protocols.constants import FrameType
from protocols.frames import Ack, Hello, Presses, PressRecord, Welcome, encode
from protocols.stream import Event, FrameStream

TIMEZONE = "Europe/Helsinki"
FIRST_TERMINAL_ID = 100_001
READ_SIZE = 65536
ANSWER_TIMEOUT_S = 30.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
FORWARD_TIMEOUT_S = 60.0
IDLE_SETTLE_S = 1.0
CONNECT_CONCURRENCY = 100
TARGET_BASELINE_RATIO = 0.5
TARGET_IDLE_RSS_MB = 80.0


class BenchError(Exception):
    """The benchmark could not run (the gateway did not start, a handshake failed)."""


# ---------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Options:
    terminals: int
    records_per_frame: int
    frames_per_terminal: int
    window: int
    pipeline_depth: int
    idle: int
    baseline_batch: int
    baseline_repeats: int
    seed: int
    json_path: Path | None
    keep: bool

    @property
    def presses(self) -> int:
        return self.terminals * self.frames_per_terminal * self.records_per_frame


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/tcp.py", description="TCP benchmark of the smiley-gateway process."
    )
    parser.add_argument("--terminals", type=int, default=100, help="concurrent terminals")
    parser.add_argument("--records-per-frame", type=int, default=50, help="records per PRESSES")
    parser.add_argument("--frames-per-terminal", type=int, default=40, help="PRESSES per terminal")
    parser.add_argument("--window", type=int, default=4, help="unacknowledged frames in flight")
    parser.add_argument("--pipeline-depth", type=int, default=16, help="gateway tcp.pipeline_depth")
    parser.add_argument("--idle", type=int, default=1000, help="idle terminals (0: skip)")
    parser.add_argument("--baseline-batch", type=int, default=5000, help="rows per txn for (b)")
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
    if options.idle < 0:
        parser.error("--idle must be at least 0")
    if min(options.baseline_batch, options.baseline_repeats, options.pipeline_depth) < 1:
        parser.error("--baseline-batch, --baseline-repeats and --pipeline-depth must be >= 1")
    return options


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class Memory:
    rss_mb: float
    hwm_mb: float


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
    generator_cpu_s: float
    encode_s: float
    memory: Memory
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoreCheck:
    central_presses: int
    forwarded_after_last_ack_s: float | None
    outbox_left: int
    exact: bool
    mismatched_terminals: tuple[str, ...]
    gateway_exit: int | None


@dataclass(frozen=True, slots=True)
class Baseline:
    """Medians of ``repeats`` runs; every run's rate is kept for the JSON."""

    rows: int
    repeats: int
    per_frame_rows_per_s: float
    per_frame_runs: tuple[float, ...]
    per_frame_commits: int
    batched_rows_per_s: float
    batched_runs: tuple[float, ...]
    batch_rows: int


@dataclass(frozen=True, slots=True)
class Idle:
    terminals: int
    connected: int
    before: Memory
    after: Memory
    per_connection_kb: float
    gateway_exit: int | None
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    value: str


@dataclass(frozen=True, slots=True)
class Report:
    options: dict[str, object]
    throughput: Throughput
    store: StoreCheck
    baseline: Baseline
    ratio_per_frame: float
    ratio_batched: float
    idle: Idle | None
    checks: tuple[Check, ...]
    problems: tuple[str, ...]


# ---------------------------------------------------------------- fleet and frames


@dataclass(frozen=True, slots=True)
class TerminalSpec:
    terminal_id: int
    key: bytes


@dataclass(frozen=True, slots=True)
class PlannedFrame:
    data: bytes
    last_seq: int
    records: tuple[PressRecord, ...]


def make_fleet(size: int) -> tuple[TerminalSpec, ...]:
    return tuple(TerminalSpec(FIRST_TERMINAL_ID + i, secrets.token_bytes(16)) for i in range(size))


def registry_toml(fleet: Sequence[TerminalSpec]) -> str:
    head = f"""
[[company]]
id = "bench"
name = "Bench Retail"
[[location]]
id = 1
company = "bench"
name = "Bench store"
timezone = "{TIMEZONE}"
[[survey]]
id = 1
company = "bench"
question = "How was your visit today?"
"""
    terminals = (
        f'[[terminal]]\nid = {t.terminal_id}\nkey = "{t.key.hex()}"\nlocation = 1\nsurvey = 1\n'
        for t in fleet
    )
    return head + "".join(terminals)


class FrameShape(Protocol):
    """What plan_frames needs of the options (bench/mqtt.py passes its own)."""

    @property
    def records_per_frame(self) -> int: ...

    @property
    def frames_per_terminal(self) -> int: ...


def plan_frames(
    spec: TerminalSpec, options: FrameShape, rng: random.Random, now: int
) -> tuple[PlannedFrame, ...]:
    """Every PRESSES frame of one terminal, seqs from 0, all stamped in the past."""
    per_frame = options.records_per_frame
    total = per_frame * options.frames_per_terminal
    first_ts = now - 1 - total  # one press a second, all in the past
    frames = []
    for index in range(options.frames_per_terminal):
        first_seq = index * per_frame
        records = tuple(
            PressRecord(seq, first_ts + seq, rng.randint(1, 4), rng.choice((0, 0, 1, 2)))
            for seq in range(first_seq, first_seq + per_frame)
        )
        frame = Presses(spec.terminal_id, now, first_seq, 0, records)
        frames.append(PlannedFrame(encode(frame, spec.key), frame.last_seq, records))
    return tuple(frames)


def hello_bytes(spec: TerminalSpec, queued: int) -> bytes:
    hello = Hello(spec.terminal_id, 0x0100, 1, int(time.time()), 0, min(queued, 0xFFFF))
    return encode(hello, spec.key)


# ---------------------------------------------------------------- the gateway process


@dataclass(frozen=True, slots=True)
class GatewayFiles:
    root: Path
    config: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "var"

    @property
    def central_db(self) -> Path:
        return self.data_dir / "central.db"

    @property
    def outbox_db(self) -> Path:
        return self.data_dir / "outbox.db"

    @property
    def log(self) -> Path:
        return self.root / "gateway.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_gateway_files(root: Path, registry: Path, pipeline_depth: int) -> GatewayFiles:
    """A configuration in the format of tests/support.py, with its own data dir."""
    root.mkdir(parents=True)
    port = free_port()
    config = root / "gateway.toml"
    config.write_text(
        f"""
[gateway]
data_dir = "var"
registry = {json.dumps(str(registry))}
stats_interval_s = 60
log_format = "json"
log_level = "warning"
[tcp]
listen = "127.0.0.1:{port}"
pipeline_depth = {pipeline_depth}
[store]
url = "sqlite:///var/central.db"
""",
        encoding="utf-8",
    )
    return GatewayFiles(root, config, port)


def gateway_command(config: Path) -> list[str]:
    script = Path(sys.executable).parent / "smiley-gateway"
    if not script.exists():
        raise BenchError(f"{script} not found: install the package into this virtualenv")
    return [str(script), "run", "--config", str(config)]


def clean_env() -> dict[str, str]:
    """This environment without SMILEY_* overrides, which would change the config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SMILEY_")}


def read_memory(pid: int) -> Memory:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return Memory(rss_mb=fields["VmRSS"], hwm_mb=fields["VmHWM"])


def read_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    after_name = stat.rsplit(")", 1)[1].split()
    ticks = int(after_name[11]) + int(after_name[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class GatewayProcess:
    """``smiley-gateway run`` as a subprocess: started on enter, killed on exit if alive."""

    def __init__(self, files: GatewayFiles) -> None:
        self.files = files
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GatewayProcess:
        with self.files.log.open("wb") as log:
            self._process = subprocess.Popen(
                gateway_command(self.files.config),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env(),
            )
        self._wait_ready()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._running()
        if process.poll() is None:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def alive(self) -> bool:
        return self._running().poll() is None

    def memory(self) -> Memory:
        return read_memory(self.pid)

    def cpu_seconds(self) -> float:
        return read_cpu_seconds(self.pid)

    def stop(self) -> int | None:
        """SIGTERM (the gateway drains its outbox), then wait; None if it did not exit."""
        process = self._running()
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 20) -> str:
        text = self.files.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise BenchError("the gateway was not started")
        return self._process

    def _wait_ready(self) -> None:
        process = self._running()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"the gateway exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.files.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError(f"the gateway did not listen within {START_TIMEOUT_S:.0f} s")


# ---------------------------------------------------------------- the load generator


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


@dataclass(frozen=True, slots=True)
class TerminalRun:
    terminal_id: int
    acked_frames: int
    acked_presses: int
    latencies_s: tuple[float, ...]
    first_send: float
    last_ack: float
    error: str | None


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
    links, errors = await open_links(gateway.files.port, fleet, queued)
    if errors:
        await close_links(links)
        raise BenchError(f"handshakes failed: {errors[:3]}")
    gateway_cpu = gateway.cpu_seconds()
    own_cpu = time.process_time()
    runs = await asyncio.gather(*(pump(k, plans[k.spec.terminal_id], window) for k in links))
    own_cpu = time.process_time() - own_cpu
    gateway_cpu = gateway.cpu_seconds() - gateway_cpu
    await close_links(links)
    run_errors = tuple(r.error for r in runs if r.error is not None)
    return LoadOutcome(tuple(runs), run_errors, gateway_cpu, own_cpu)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize_load(
    outcome: LoadOutcome, options: Options, encode_s: float, memory: Memory
) -> Throughput:
    runs = outcome.runs
    presses = sum(r.acked_presses for r in runs)
    frames = sum(r.acked_frames for r in runs)
    wall = max(r.last_ack for r in runs) - min(r.first_send for r in runs)
    latencies = sorted(lat for r in runs for lat in r.latencies_s)
    latency = Latency(
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] if latencies else 0.0) * 1000,
    )
    return Throughput(
        presses=presses,
        frames=frames,
        wall_s=wall,
        presses_per_s=presses / wall if wall > 0 else 0.0,
        latency=latency,
        in_flight_presses=options.terminals * options.window * options.records_per_frame,
        gateway_cpu_s=outcome.gateway_cpu_s,
        gateway_cpu_us_per_press=outcome.gateway_cpu_s * 1e6 / max(1, presses),
        generator_cpu_s=outcome.generator_cpu_s,
        encode_s=encode_s,
        memory=memory,
        errors=outcome.errors,
    )


# ---------------------------------------------------------------- the central store


def open_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)


def count_rows(path: Path, table: str) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(open_readonly(path)) as db:
        row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])


def wait_forwarded(gateway: GatewayProcess, expected: int, last_ack: float) -> float | None:
    """Seconds after the last ACK until the store holds ``expected`` presses; None: never."""
    deadline = time.monotonic() + FORWARD_TIMEOUT_S
    while time.monotonic() < deadline and gateway.alive:
        if count_rows(gateway.files.central_db, "press") >= expected:
            return time.perf_counter() - last_ack
        time.sleep(0.1)
    return None


def store_mismatches(path: Path, runs: Sequence[TerminalRun]) -> tuple[str, ...]:
    """Terminals whose stored presses are not exactly seqs 0 .. ACKed - 1."""
    with contextlib.closing(open_readonly(path)) as db:
        stored = {
            tid: (count, low, high)
            for tid, count, low, high in db.execute(
                "SELECT terminal_id, count(*), min(seq), max(seq) FROM press GROUP BY terminal_id"
            )
        }
    problems = []
    for run in runs:
        expected = (run.acked_presses, 0, run.acked_presses - 1) if run.acked_presses else None
        found = stored.pop(run.terminal_id, None)
        if found != expected:
            problems.append(f"terminal {run.terminal_id}: stored {found}, ACKed {expected}")
    problems.extend(f"terminal {tid}: stored {found}, never sent" for tid, found in stored.items())
    return tuple(problems)


# ---------------------------------------------------------------- the bare sqlite3 baseline

_BASELINE_SCHEMA = """
CREATE TABLE press (
    id INTEGER PRIMARY KEY,
    terminal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    utc_offset_s INTEGER NOT NULL,
    button INTEGER NOT NULL,
    followup INTEGER NOT NULL,
    clock_corrected INTEGER NOT NULL,
    transport TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    UNIQUE (terminal_id, seq)
)
"""
_BASELINE_INSERT = (
    "INSERT OR IGNORE INTO press (terminal_id, seq, occurred_at, utc_offset_s, button, followup,"
    " clock_corrected, transport, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
Row = tuple[int, int, int, str, int, int, int, str, int]


def baseline_frames(plans: dict[int, tuple[PlannedFrame, ...]]) -> list[list[Row]]:
    """The gateway's rows, one list per frame, frames interleaved across terminals."""
    zone = ZoneInfo(TIMEZONE)
    stamps = {r.ts for frames in plans.values() for f in frames for r in f.records}
    local = {ts: datetime.fromtimestamp(ts, zone).isoformat() for ts in stamps}
    received_ms = time.time_ns() // 1_000_000
    depth = max(len(frames) for frames in plans.values())
    result = []
    for index in range(depth):
        for terminal_id, frames in plans.items():
            if index < len(frames):
                result.append(
                    [
                        (
                            terminal_id,
                            r.seq,
                            r.ts,
                            local[r.ts],
                            r.button,
                            r.followup,
                            0,
                            "tcp",
                            received_ms,
                        )
                        for r in frames[index].records
                    ]
                )
    return result


@contextlib.contextmanager
def baseline_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A fresh database with the outbox's durability settings; removed afterwards."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_BASELINE_SCHEMA)
        yield db
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def timed_transactions(path: Path, batches: Sequence[Sequence[Row]]) -> float:
    """Rows per second inserting ``batches``, one transaction (one commit) each."""
    with baseline_db(path) as db:
        start = time.perf_counter()
        for batch in batches:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_BASELINE_INSERT, batch)
            db.execute("COMMIT")
        elapsed = time.perf_counter() - start
    return sum(len(b) for b in batches) / elapsed


def run_baseline(
    directory: Path, frames: list[list[Row]], batch_rows: int, repeats: int
) -> Baseline:
    """(a) one transaction per frame and (b) ``batch_rows`` per transaction, alternated."""
    rows = [row for frame in frames for row in frame]
    batches = [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]
    per_frame: list[float] = []
    batched: list[float] = []
    for _ in range(repeats):
        per_frame.append(timed_transactions(directory / "baseline-a.db", frames))
        batched.append(timed_transactions(directory / "baseline-b.db", batches))
    return Baseline(
        rows=len(rows),
        repeats=repeats,
        per_frame_rows_per_s=statistics.median(per_frame),
        per_frame_runs=tuple(per_frame),
        per_frame_commits=len(frames),
        batched_rows_per_s=statistics.median(batched),
        batched_runs=tuple(batched),
        batch_rows=batch_rows,
    )


# ---------------------------------------------------------------- phases


@dataclass(frozen=True, slots=True)
class ThroughputPhase:
    throughput: Throughput
    store: StoreCheck
    plans: dict[int, tuple[PlannedFrame, ...]]


def throughput_phase(
    options: Options, fleet: Sequence[TerminalSpec], root: Path, registry: Path
) -> ThroughputPhase:
    rng = random.Random(options.seed)
    started = time.perf_counter()
    now = int(time.time())
    plans = {s.terminal_id: plan_frames(s, options, rng, now) for s in fleet}
    encode_s = time.perf_counter() - started
    files = write_gateway_files(root / "throughput", registry, options.pipeline_depth)
    with GatewayProcess(files) as gateway:
        outcome = asyncio.run(drive_load(gateway, plans, fleet, options.window))
        acked = sum(r.acked_presses for r in outcome.runs)
        last_ack = max(r.last_ack for r in outcome.runs)
        lag = wait_forwarded(gateway, acked, last_ack)
        memory = gateway.memory()
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
    throughput = summarize_load(outcome, options, encode_s, memory)
    return ThroughputPhase(throughput, store, plans)


@dataclass(frozen=True, slots=True)
class IdleSample:
    connected: int
    before: Memory
    after: Memory
    errors: tuple[str, ...]


async def hold_idle(gateway: GatewayProcess, fleet: Sequence[TerminalSpec]) -> IdleSample:
    """Connect and greet ``fleet``, stay idle, read the gateway's memory, disconnect."""
    before = gateway.memory()
    links, errors = await open_links(gateway.files.port, fleet, 0)
    try:
        await asyncio.sleep(IDLE_SETTLE_S)
        after = gateway.memory()
        connected = sum(not link.closed_by_peer for link in links)
    finally:
        await close_links(links)
    return IdleSample(connected, before, after, tuple(errors[:5]))


def idle_phase(fleet: Sequence[TerminalSpec], root: Path, registry: Path, depth: int) -> Idle:
    files = write_gateway_files(root / "idle", registry, depth)
    with GatewayProcess(files) as gateway:
        sample = asyncio.run(hold_idle(gateway, fleet))
        exit_code = gateway.stop()
    grown_kb = (sample.after.rss_mb - sample.before.rss_mb) * 1024
    return Idle(
        terminals=len(fleet),
        connected=sample.connected,
        before=sample.before,
        after=sample.after,
        per_connection_kb=grown_kb / max(1, sample.connected),
        gateway_exit=exit_code,
        errors=sample.errors,
    )


def raise_fd_limit(needed: int) -> None:
    """Lift the soft limit of open files (inherited by the gateway spawned after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            print(f"warning: open-file limit {target} < {needed} needed", file=sys.stderr)


# ---------------------------------------------------------------- report


def evaluate(
    options: Options, phase: ThroughputPhase, baseline: Baseline, idle: Idle | None
) -> Report:
    rate = phase.throughput.presses_per_s
    ratio_a = rate / baseline.per_frame_rows_per_s
    ratio_b = rate / baseline.batched_rows_per_s
    checks = [
        Check(
            f"durable presses/s >= {TARGET_BASELINE_RATIO} x baseline (a)",
            ratio_a >= TARGET_BASELINE_RATIO,
            f"{ratio_a:.2f}",
        )
    ]
    if idle is not None:
        checks.append(
            Check(
                f"idle VmRSS with {idle.terminals} terminals < {TARGET_IDLE_RSS_MB:.0f} MB",
                idle.after.rss_mb < TARGET_IDLE_RSS_MB and idle.connected == idle.terminals,
                f"{idle.after.rss_mb:.1f} MB ({idle.connected} connected)",
            )
        )
    return Report(
        options={k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        throughput=phase.throughput,
        store=phase.store,
        baseline=baseline,
        ratio_per_frame=ratio_a,
        ratio_batched=ratio_b,
        idle=idle,
        checks=tuple(checks),
        problems=problems_of(options, phase, idle),
    )


def problems_of(options: Options, phase: ThroughputPhase, idle: Idle | None) -> tuple[str, ...]:
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
    if idle is not None:
        problems.extend(idle.errors)
        if idle.gateway_exit != 0:
            problems.append(f"idle gateway exit status after SIGTERM: {idle.gateway_exit}")
    return tuple(problems)


def render(report: Report) -> str:
    lines = ["smiley-gateway TCP benchmark"]
    lines += _render_load(report.options, report.throughput)
    lines += _render_baseline(report)
    lines += _render_store(report.store)
    if report.idle is not None:
        lines += _render_idle(report.idle)
    lines += [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.value}" for c in report.checks]
    lines += [f"BROKEN  {p}" for p in report.problems]
    return "\n".join(lines)


def _share(cpu_s: float, wall_s: float) -> str:
    return f"{100 * cpu_s / wall_s:.0f}% of one core" if wall_s > 0 else "n/a"


def _render_load(o: dict[str, object], t: Throughput) -> list[str]:
    queueing_ms = 1000 * t.in_flight_presses / t.presses_per_s if t.presses_per_s else 0.0
    return [
        f"  load          {o['terminals']} terminals x {o['frames_per_terminal']} frames x "
        f"{o['records_per_frame']} records, window {o['window']} frames, pipeline_depth "
        f"{o['pipeline_depth']} (frames pre-encoded in {t.encode_s:.1f} s, not timed)",
        f"  throughput    {t.presses:,} presses ({t.frames:,} frames) ACKed in {t.wall_s:.2f} s"
        f" = {t.presses_per_s:,.0f} durable presses/s",
        f"  ACK latency   p50 {t.latency.p50_ms:.1f} ms   p99 {t.latency.p99_ms:.1f} ms   "
        f"max {t.latency.max_ms:.1f} ms (frame sent -> its ACK read)",
        f"                {t.in_flight_presses:,} presses in flight: queueing alone gives "
        f"in-flight / rate = {queueing_ms:.0f} ms",
        f"  gateway       CPU {t.gateway_cpu_s:.1f} s ({_share(t.gateway_cpu_s, t.wall_s)}), "
        f"{t.gateway_cpu_us_per_press:.1f} us per press; peak RSS (VmHWM) "
        f"{t.memory.hwm_mb:.1f} MB, RSS at end {t.memory.rss_mb:.1f} MB",
        f"  generator     CPU {t.generator_cpu_s:.1f} s ({_share(t.generator_cpu_s, t.wall_s)})",
    ]


def _render_baseline(report: Report) -> list[str]:
    b = report.baseline
    return [
        f"  baseline (a)  sqlite3 WAL+FULL, one txn per frame: "
        f"{b.per_frame_rows_per_s:,.0f} rows/s ({b.per_frame_commits:,} commits; "
        f"median of {_rates(b.per_frame_runs)})",
        f"  baseline (b)  sqlite3 WAL+FULL, {b.batch_rows} rows per txn (upper bound): "
        f"{b.batched_rows_per_s:,.0f} rows/s (median of {_rates(b.batched_runs)})",
        f"  ratio         gateway / (a) = {report.ratio_per_frame:.2f}   "
        f"gateway / (b) = {report.ratio_batched:.2f} (upper bound, not a target)",
    ]


def _rates(runs: Sequence[float]) -> str:
    return " / ".join(f"{r / 1000:,.0f}k" for r in runs)


def _render_store(s: StoreCheck) -> list[str]:
    lag = s.forwarded_after_last_ack_s
    when = "never (timeout)" if lag is None else f"{lag:.2f} s after the last ACK"
    verdict = "exactly the ACKed ones" if s.exact else "MISMATCH"
    return [
        f"  store         {s.central_presses:,} presses in the central store ({verdict}); "
        f"all forwarded {when}; outbox left {s.outbox_left}; gateway exit {s.gateway_exit}"
    ]


def _render_idle(i: Idle) -> list[str]:
    return [
        f"  idle          {i.connected}/{i.terminals} terminals welcomed and idle: VmRSS "
        f"{i.after.rss_mb:.1f} MB ({i.before.rss_mb:.1f} MB before, "
        f"{i.per_connection_kb:.1f} kB per connection)"
    ]


# ---------------------------------------------------------------- main


def run(options: Options, root: Path) -> Report:
    fleet = make_fleet(max(options.terminals, options.idle))
    registry = root / "terminals.toml"
    registry.write_text(registry_toml(fleet), encoding="utf-8")
    phase = throughput_phase(options, fleet[: options.terminals], root, registry)
    baseline = run_baseline(
        root, baseline_frames(phase.plans), options.baseline_batch, options.baseline_repeats
    )
    idle = None
    if options.idle:
        idle = idle_phase(fleet[: options.idle], root, registry, options.pipeline_depth)
    return evaluate(options, phase, baseline, idle)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    raise_fd_limit(2 * max(options.terminals, options.idle) + 256)
    root = Path(tempfile.mkdtemp(prefix="smiley-bench-"))
    try:
        report = run(options, root)
    except BenchError as exc:
        print(f"bench/tcp.py: {exc}", file=sys.stderr)
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
