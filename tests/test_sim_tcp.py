"""firmware_sim over real loopback TCP, against a scripted test double of the gateway.

The double uses the real ``protocols`` codec: it answers HELLO with WELCOME, commits
and ACKs PRESSES, and can be told to NAK BUSY or MALFORMED, to hold its answers, to
drop the connection, or to lie about next_seq. Everything waits on conditions.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware_sim import (
    POWER_ON_TIME,
    BackoffOptions,
    Fault,
    FaultOptions,
    Fleet,
    FleetOptions,
    LinkOptions,
    NotAllAcked,
    ScheduledFault,
    Steady,
    TerminalStopped,
)
from protocols import constants as c
from protocols.constants import FrameType, NakCode
from protocols.errors import DecodeError
from protocols.frames import Ack, Frame, Heartbeat, Hello, Nak, Presses, Welcome, encode
from protocols.stream import FrameStream

REPO = Path(__file__).resolve().parents[1]
KEYS = {
    1001: bytes.fromhex("000102030405060708090a0b0c0d0e0f"),
    1002: bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f"),
    1003: bytes(range(16, 32)),
    1004: bytes(range(32, 48)),
}
FAST = {
    "reconnect": BackoffOptions(initial=0.01, maximum=0.05),
    "busy": BackoffOptions(initial=0.01, maximum=0.05),
    "answer_timeout": 5.0,
}


@dataclass(frozen=True, slots=True)
class Received:
    frame: Frame
    connection: int
    received_at: int


@dataclass(frozen=True, slots=True)
class Committed:
    ts: int
    button: int
    followup: int
    corrected: int | None
    """ts + (received - sent_at) for CLOCK_UNSYNCED frames (spec section 6)."""


class ScriptedGateway:
    """A test double of the gateway's TCP side: commits, ACKs, and misbehaves on request."""

    def __init__(self, keys: dict[int, bytes], tls: ssl.SSLContext | None = None) -> None:
        self.keys = keys
        self.tls = tls
        self.port = 0
        self.received: list[Received] = []
        self.committed: dict[tuple[int, int], Committed] = {}
        self.chunks: list[int] = []
        self.errors: Counter[str] = Counter()
        self.connections = 0
        self.changed = asyncio.Event()
        # The script: set these from a test.
        self.nak_next: list[NakCode] = []
        """NAK the next PRESSES frames with these codes, in order."""
        self.drop_next_presses = 0
        """Abort the connection on the next N PRESSES frames, without answering."""
        self.hold = False
        """Receive but do not answer PRESSES and HEARTBEAT until ``release()``."""
        self.welcome_next_seq: int | None = None
        self._held: dict[int, tuple[asyncio.StreamWriter, list[Frame]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedGateway:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------ reading the record

    def presses(self, terminal_id: int | None = None) -> list[Received]:
        return [
            r
            for r in self.received
            if isinstance(r.frame, Presses)
            and (terminal_id is None or r.frame.terminal_id == terminal_id)
        ]

    def hellos(self, terminal_id: int | None = None) -> list[Hello]:
        return [
            r.frame
            for r in self.received
            if isinstance(r.frame, Hello)
            and (terminal_id is None or r.frame.terminal_id == terminal_id)
        ]

    def seqs_received(self, terminal_id: int) -> Counter[int]:
        counts: Counter[int] = Counter()
        for r in self.presses(terminal_id):
            assert isinstance(r.frame, Presses)
            counts.update(rec.seq for rec in r.frame.records)
        return counts

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever the gateway saw something."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def release(self) -> None:
        """Answer every held frame, in order, and stop holding."""
        self.hold = False
        for connection, (writer, held) in list(self._held.items()):
            for frame in held:
                self._answer(connection, frame, writer)
            held.clear()

    # ------------------------------------------------------------ serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        connection = self.connections
        stream = FrameStream(self.keys.get)
        self._held[connection] = (writer, [])
        try:
            await self._read_frames(connection, stream, reader, writer)
        except ConnectionError:
            pass
        finally:
            self._held.pop(connection, None)
            writer.transport.abort()
            self._tasks.discard(task)
            self.changed.set()

    async def _read_frames(
        self,
        connection: int,
        stream: FrameStream,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        said_hello = False
        while True:
            data = await reader.read(65536)
            if not data:
                return
            self.chunks.append(len(data))
            for event in stream.feed(data):
                self.changed.set()
                if isinstance(event, DecodeError):
                    self.errors[event.name] += 1
                    if event.nak_code is not None and event.terminal_id is not None:
                        nak = Nak(event.terminal_id, event.nak_code, event.ref_seq)
                        key = (
                            None
                            if event.nak_code is NakCode.UNKNOWN_TERMINAL
                            else self.keys[event.terminal_id]
                        )
                        writer.write(encode(nak, key))
                    if event.closes:
                        writer.close()
                        return
                    continue
                self.received.append(Received(event, connection, int(time.time())))
                if isinstance(event, Hello):
                    said_hello = True
                    writer.write(
                        encode(self._welcome(event.terminal_id), self.keys[event.terminal_id])
                    )
                    continue
                assert said_hello, "the simulator sent a frame before HELLO"
                if isinstance(event, Presses) and self.drop_next_presses:
                    self.drop_next_presses -= 1
                    writer.transport.abort()
                    return
                if self.hold:
                    self._held[connection][1].append(event)
                else:
                    self._answer(connection, event, writer)

    def _welcome(self, terminal_id: int) -> Welcome:
        if self.welcome_next_seq is not None:
            next_seq = self.welcome_next_seq
        else:
            seqs = [seq for tid, seq in self.committed if tid == terminal_id]
            next_seq = max(seqs) + 1 if seqs else 0
        return Welcome(terminal_id, int(time.time()), next_seq)

    def _answer(self, connection: int, frame: Frame, writer: asyncio.StreamWriter) -> None:
        now = int(time.time())
        answer: Frame
        match frame:
            case Presses() if self.nak_next:
                answer = Nak(frame.terminal_id, self.nak_next.pop(0), frame.first_seq)
            case Presses():
                received_at = next(
                    r.received_at for r in reversed(self.received) if r.frame is frame
                )
                for record in frame.records:
                    corrected = (
                        record.ts + (received_at - frame.sent_at) if frame.clock_unsynced else None
                    )
                    self.committed.setdefault(
                        (frame.terminal_id, record.seq),
                        Committed(record.ts, record.button, record.followup, corrected),
                    )
                answer = Ack(frame.terminal_id, FrameType.PRESSES, frame.last_seq, now)
            case Heartbeat():
                answer = Ack(frame.terminal_id, FrameType.HEARTBEAT, 0, now)
            case _:
                raise AssertionError(f"unexpected {frame}")
        writer.write(encode(answer, self.keys[frame.terminal_id]))
        self.changed.set()


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
async def gateway() -> AsyncIterator[ScriptedGateway]:
    async with ScriptedGateway(KEYS) as double:
        yield double


def link_to(gateway: ScriptedGateway, **overrides: object) -> LinkOptions:
    options: dict[str, object] = {**FAST, **overrides}
    return LinkOptions("127.0.0.1", gateway.port, **options)  # type: ignore[arg-type]


def keys_of(*terminal_ids: int) -> dict[int, bytes]:
    return {tid: KEYS[tid] for tid in terminal_ids}


def assert_store_matches_report(gateway: ScriptedGateway, fleet: Fleet) -> None:
    acked = fleet.report.acked
    assert set(gateway.committed) == set(acked)
    for key, made in acked.items():
        stored = gateway.committed[key]
        assert (stored.ts, stored.button, stored.followup) == (made.ts, made.button, made.followup)


def contiguous_seqs(fleet: Fleet, terminal_id: int) -> list[int]:
    return sorted(fleet.report[terminal_id].records)


# ---------------------------------------------------------------- tests


async def test_every_press_is_acked_exactly_once(gateway: ScriptedGateway) -> None:
    options = FleetOptions(pattern=Steady(rate=400), seed=7)
    async with Fleet(keys_of(1001, 1002, 1003), link_to(gateway), options) as fleet:
        await fleet.run(presses=150)
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report
        assert report.all_acked()
        assert len(report.made) == 150
        assert_store_matches_report(gateway, fleet)
        for tid in (1001, 1002, 1003):
            terminal = report[tid]
            assert contiguous_seqs(fleet, tid) == list(range(len(terminal.records)))
            assert set(terminal.sends.values()) <= {1}
            assert terminal.duplicate_acks == 0
            assert terminal.naks == Counter()
            assert fleet.terminals[tid].pending == {}
        for made in report.made.values():
            assert 1 <= made.button <= 4
            assert 0 <= made.followup <= 16
            assert not made.unsynced
            assert abs(made.ts - made.true_time) <= 2
    summary = json.loads(json.dumps(fleet.report.summary(include_records=True)))
    assert summary["all_acked"] is True
    assert summary["totals"]["acked"] == 150


async def test_presses_follow_the_seeded_rng(gateway: ScriptedGateway) -> None:
    buttons = []
    for _ in range(2):
        async with Fleet(keys_of(1001), link_to(gateway), FleetOptions(Steady(0), seed=3)) as fleet:
            await fleet.run(presses=20)
            buttons.append([(p.button, p.followup) for p in fleet.report[1001].records.values()])
    assert buttons[0] == buttons[1]
    assert len(set(buttons[0])) > 1


async def test_records_are_resent_after_the_gateway_drops_the_connection(
    gateway: ScriptedGateway,
) -> None:
    gateway.drop_next_presses = 1
    async with Fleet(keys_of(1001), link_to(gateway)) as fleet:
        await fleet.wait_connected()
        for button in (1, 2, 3):
            fleet.press(1001, button)
        await fleet.wait_all_acked(timeout=5)
        seen = gateway.seqs_received(1001)
        assert seen[0] == 2
        assert set(seen) == {0, 1, 2}
        assert fleet.report[1001].connects == 2
        assert fleet.report[1001].reconnects == 1
        assert_store_matches_report(gateway, fleet)


async def test_records_are_resent_after_the_terminal_drops_mid_frame(
    gateway: ScriptedGateway,
) -> None:
    async with Fleet(keys_of(1001), link_to(gateway)) as fleet:
        await fleet.wait_connected()
        fleet.inject(1001, Fault.DROP_MID_FRAME)
        fleet.press(1001, 4, 16)
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        assert report.faults["drop_mid_frame"] == 1
        assert report.session_ends["drop_mid_frame"] == 1
        assert report.sends[0] == 2
        assert gateway.seqs_received(1001) == Counter({0: 1})  # the cut frame never decoded
        assert_store_matches_report(gateway, fleet)


async def test_frames_written_one_byte_at_a_time_decode(gateway: ScriptedGateway) -> None:
    options = FleetOptions(faults=FaultOptions(split_write=1.0))
    async with Fleet(keys_of(1001), link_to(gateway, max_records=5), options) as fleet:
        await fleet.wait_connected()
        for _ in range(12):
            fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        frames = len(gateway.received)
        assert fleet.report[1001].faults["split_write"] == frames
        assert len(gateway.chunks) > 3 * frames  # many reads per frame: the bytes came apart
        assert not gateway.errors
        assert_store_matches_report(gateway, fleet)


async def test_a_frame_with_a_bad_crc_is_resent(gateway: ScriptedGateway) -> None:
    async with Fleet(keys_of(1001), link_to(gateway)) as fleet:
        await fleet.wait_connected()
        fleet.inject(1001, Fault.CORRUPT_CRC)
        for _ in range(3):
            fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        assert gateway.errors == Counter({"BAD_CRC": 1})
        assert report.naks == Counter({"BAD_CRC": 1})
        assert report.sends == Counter({0: 2, 1: 2, 2: 2})
        assert report.connects == 1  # BAD_CRC does not cost the connection
        assert_store_matches_report(gateway, fleet)


async def test_busy_keeps_the_records_and_retries(gateway: ScriptedGateway) -> None:
    gateway.nak_next = [NakCode.BUSY, NakCode.BUSY]
    async with Fleet(keys_of(1001), link_to(gateway)) as fleet:
        await fleet.wait_connected()
        for _ in range(5):
            fleet.press(1001)
        await gateway.until(lambda: len(gateway.presses()) >= 2)
        assert sorted(fleet.terminals[1001].pending) == [0, 1, 2, 3, 4]
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        assert report.naks == Counter({"BUSY": 2})
        assert gateway.seqs_received(1001) == Counter(dict.fromkeys(range(5), 3))
        assert_store_matches_report(gateway, fleet)


async def test_malformed_is_reported_and_the_records_kept(gateway: ScriptedGateway) -> None:
    gateway.nak_next = [NakCode.MALFORMED]
    async with Fleet(keys_of(1001), link_to(gateway)) as fleet:
        await fleet.wait_connected()
        fleet.press(1001)
        await gateway.until(lambda: len(gateway.presses()) == 1)
        with pytest.raises(NotAllAcked):
            await fleet.wait_all_acked(timeout=0.2)
        report = fleet.report[1001]
        assert report.firmware_bug_count == 1
        assert "MALFORMED" in report.firmware_bugs[0]
        assert list(fleet.terminals[1001].pending) == [0]
        fleet.drop(1001)  # the next session sends it again
        await fleet.wait_all_acked(timeout=5)
        assert_store_matches_report(gateway, fleet)


async def test_welcome_next_seq_is_not_taken_as_committed(gateway: ScriptedGateway) -> None:
    gateway.welcome_next_seq = 1000
    async with Fleet(keys_of(1001), link_to(gateway)) as fleet:
        await fleet.wait_connected()
        for _ in range(3):
            fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        assert fleet.report[1001].gateway_ahead == 1
        assert set(gateway.seqs_received(1001)) == {0, 1, 2}


async def test_garbage_after_a_frame_makes_the_terminal_reconnect_and_resend(
    gateway: ScriptedGateway,
) -> None:
    gateway.hold = True  # so the frame before the garbage is never answered
    async with Fleet(keys_of(1001), link_to(gateway)) as fleet:
        await fleet.wait_connected()
        fleet.inject(1001, Fault.GARBAGE)
        for _ in range(4):
            fleet.press(1001)
        await gateway.until(lambda: gateway.errors["BAD_MAGIC"] == 1)
        gateway.hold = False
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        assert gateway.errors == Counter({"BAD_MAGIC": 1})
        assert report.connects == 2
        assert report.sends == Counter(dict.fromkeys(range(4), 2))
        assert_store_matches_report(gateway, fleet)


async def test_power_loss_sends_unsynced_frames_whose_correction_is_true_time(
    gateway: ScriptedGateway,
) -> None:
    async with Fleet(keys_of(1001), link_to(gateway)) as fleet:
        await fleet.wait_connected()
        gateway.hold = True  # these three stay unACKed across the power loss
        synced = [fleet.press(1001, 3) for _ in range(3)]
        await gateway.until(lambda: len(gateway.presses()) >= 1)
        fleet.power_loss(1001)
        lost = [fleet.press(1001, 1, 2) for _ in range(3)]  # before any reconnect: unsynced
        gateway.hold = False
        await fleet.wait_all_acked(timeout=5)

    assert all(not p.unsynced for p in synced)
    assert all(p.unsynced and p.ts < POWER_ON_TIME + 60 for p in lost)
    hellos = gateway.hellos(1001)
    assert [(h.boot_count, h.clock_unsynced) for h in hellos] == [(0, False), (1, True)]
    after_reboot = [r.frame for r in gateway.presses(1001) if r.connection == 2]
    assert all(isinstance(f, Presses) for f in after_reboot)
    for frame in after_reboot:
        assert isinstance(frame, Presses)
        unsynced_ts = [rec.ts < POWER_ON_TIME + 60 for rec in frame.records]
        assert all(unsynced_ts) == frame.clock_unsynced  # never mixed in one frame
        assert any(unsynced_ts) == frame.clock_unsynced
        if frame.clock_unsynced:
            assert POWER_ON_TIME <= frame.sent_at < POWER_ON_TIME + 60
    assert {f.clock_unsynced for f in after_reboot if isinstance(f, Presses)} == {False, True}
    for made in lost:
        corrected = gateway.committed[(1001, made.seq)].corrected
        assert corrected is not None
        assert abs(corrected - made.true_time) <= 2
    report = fleet.report[1001]
    assert report.power_losses == 1
    assert report.session_ends["power_loss"] == 1


async def test_heartbeats_go_out_on_an_idle_connection(gateway: ScriptedGateway) -> None:
    async with Fleet(keys_of(1001), link_to(gateway, heartbeat_interval=0.05)) as fleet:
        await gateway.until(
            lambda: sum(isinstance(r.frame, Heartbeat) for r in gateway.received) >= 3
        )
        heartbeat = next(r.frame for r in gateway.received if isinstance(r.frame, Heartbeat))
        assert isinstance(heartbeat, Heartbeat)
        assert heartbeat.battery_pct == c.MAINS_POWERED
        assert fleet.report[1001].frames_sent["HEARTBEAT"] >= 3


async def test_frames_are_pipelined_up_to_the_window(gateway: ScriptedGateway) -> None:
    gateway.hold = True
    async with Fleet(keys_of(1001), link_to(gateway, window=3, max_records=1)) as fleet:
        await fleet.wait_connected()
        for _ in range(7):
            fleet.press(1001)
        await gateway.until(lambda: len(gateway.presses()) == 3)
        gateway.release()
        await fleet.wait_all_acked(timeout=5)
        assert fleet.report[1001].max_in_flight == 3
        assert len(gateway.presses()) == 7


async def test_unanswered_frames_time_out_and_are_resent(gateway: ScriptedGateway) -> None:
    gateway.hold = True
    async with Fleet(keys_of(1001), link_to(gateway, answer_timeout=0.2)) as fleet:
        await fleet.wait_connected()
        fleet.press(1001)
        await gateway.until(lambda: gateway.connections == 2)
        gateway.hold = False
        await fleet.wait_all_acked(timeout=5)
        assert fleet.report[1001].session_ends["AnswerTimeout"] >= 1


async def test_unknown_terminal_stops_and_others_go_on(gateway: ScriptedGateway) -> None:
    keys = {**keys_of(1001), 4242: bytes(16)}
    async with Fleet(keys, link_to(gateway), FleetOptions(Steady(0))) as fleet:
        fleet.press(4242)
        with pytest.raises(TerminalStopped):
            await fleet.wait_all_acked(timeout=5)
        assert fleet.stopped() == [4242]
        assert gateway.errors == Counter({"UNKNOWN_TERMINAL": 1})
        await fleet.run(presses=5)  # only 1001 still presses
        assert len(fleet.report[1001].records) == 5
        assert fleet.report[4242].stopped == "UNKNOWN_TERMINAL"


async def test_seq_and_pending_records_persist_across_runs(
    gateway: ScriptedGateway, tmp_path: Path
) -> None:
    options = FleetOptions(pattern=Steady(0), state_dir=tmp_path, name="demo", seed=1)
    async with Fleet(keys_of(1001, 1002), link_to(gateway), options) as fleet:
        await fleet.run(presses=10)
        await fleet.wait_all_acked(timeout=5)
        gateway.hold = True
        fleet.press(1001)  # never ACKed in this run
        await gateway.until(lambda: len(gateway.seqs_received(1001)) == 6)
    first_run = {tid: fleet.terminals[tid].next_seq for tid in (1001, 1002)}
    assert sum(first_run.values()) == 11
    assert (tmp_path / "demo.json").exists()

    gateway.hold = False
    async with Fleet(keys_of(1001, 1002), link_to(gateway), options) as again:
        restored = again.report[1001].restored
        assert restored == {first_run[1001] - 1}
        await again.run(presses=4)
        await again.wait_all_acked(timeout=5)
        for tid in (1001, 1002):
            made = sorted(
                s for s in again.report[tid].records if s not in again.report[tid].restored
            )
            assert made == list(range(first_run[tid], first_run[tid] + len(made)))
    assert set(gateway.committed) == {
        (tid, seq) for tid in (1001, 1002) for seq in range(again.terminals[tid].next_seq)
    }


async def test_random_faults_lose_nothing(gateway: ScriptedGateway) -> None:
    faults = FaultOptions(
        split_write=0.1,
        garbage=0.05,
        corrupt_crc=0.1,
        drop=0.05,
        power_loss=0.02,
        schedule=(ScheduledFault(0.0, Fault.POWER_LOSS, 1002),),
    )
    options = FleetOptions(pattern=Steady(rate=300), seed=11, faults=faults)
    gateway.nak_next = [NakCode.BUSY] * 3
    async with Fleet(
        keys_of(1001, 1002, 1003, 1004), link_to(gateway, max_records=8), options
    ) as fleet:
        await fleet.run(presses=300)
        await fleet.wait_all_acked(timeout=15)
        assert_store_matches_report(gateway, fleet)
        totals = fleet.report.totals()
        assert totals["made"] == 300
        assert totals["duplicate_acks"] == 0
        assert totals["power_losses"] >= 2
        assert set(totals["faults"]) >= {"split_write", "garbage", "corrupt_crc", "power_loss"}
        for key, stored in gateway.committed.items():
            made = fleet.report.acked[key]
            if stored.corrected is not None:
                assert made.unsynced
                assert abs(stored.corrected - made.true_time) <= 3
            else:
                assert not made.unsynced


async def test_cancelling_a_run_leaves_no_tasks(gateway: ScriptedGateway) -> None:
    async with Fleet(keys_of(1001, 1002), link_to(gateway), FleetOptions(Steady(200))) as fleet:
        running = asyncio.create_task(fleet.run())
        await fleet.wait_acked(10, timeout=5)
        assert fleet.report.acked_count >= 10
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert fleet.report.made


async def test_a_run_ends_after_its_duration(gateway: ScriptedGateway) -> None:
    async with Fleet(keys_of(1001), link_to(gateway), FleetOptions(Steady(50))) as fleet:
        report = await fleet.run(duration=0.2)
        made = len(report.made)
        assert 0 < made < 60
        await fleet.wait_all_acked(timeout=5)


async def test_cli_runs_a_fleet_and_prints_the_report(
    gateway: ScriptedGateway, tmp_path: Path
) -> None:
    registry = tmp_path / "terminals.toml"
    registry.write_text(
        "".join(f'[[terminal]]\nid = {tid}\nkey = "{key.hex()}"\n' for tid, key in KEYS.items()),
        encoding="utf-8",
    )
    report_path = tmp_path / "report.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_sim",
        "tcp",
        "--port",
        str(gateway.port),
        "--registry",
        str(registry),
        "--terminals",
        "2",
        "--presses",
        "30",
        "--rate",
        "100",
        "--faults",
        "crc=0.2",
        "--state-dir",
        str(tmp_path / "state"),
        "--report",
        str(report_path),
        "--wait",
        "10",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(20):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    printed = json.loads(stdout)
    assert printed == json.loads(report_path.read_text(encoding="utf-8"))
    assert printed["all_acked"] is True
    assert printed["totals"]["acked"] == 30
    assert set(printed["terminals"]) == {"1001", "1002"}
    assert "acked=30" in stderr.decode()
    assert len(gateway.committed) == 30
    assert (tmp_path / "state" / "fleet.json").exists()


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = [
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        *("-keyout", str(key), "-out", str(cert)),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


async def test_terminals_talk_tls(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    client_side = ssl.create_default_context(cafile=str(cert))
    async with ScriptedGateway(KEYS, tls=server_side) as gateway:
        options = FleetOptions(pattern=Steady(0))
        async with Fleet(keys_of(1001, 1002), link_to(gateway, ssl=client_side), options) as fleet:
            await fleet.wait_connected()
            fleet.inject(1001, Fault.DROP_MID_FRAME)
            await fleet.run(presses=40)
            await fleet.wait_all_acked(timeout=5)
            assert fleet.report[1001].reconnects == 1
            assert_store_matches_report(gateway, fleet)
