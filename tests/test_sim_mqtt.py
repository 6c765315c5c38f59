"""firmware_sim over MQTT, through a private Mosquitto, against a scripted gateway double.

The double is one aiomqtt client with a persistent session (fixed client id, clean
start off) subscribed to ``smiley/v1/+/up``. It decodes frames with the real codec,
commits and ACKs PRESSES on ``smiley/v1/{id}/down``, and can be told to NAK, to stay
silent, to hold its answers, or to go offline. Everything waits on conditions.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim import (
    POWER_ON_TIME,
    BackoffOptions,
    Fault,
    FaultOptions,
    Fleet,
    FleetOptions,
    FleetReport,
    MqttLinkOptions,
    MqttProtocol,
    ScheduledFault,
    Steady,
    Terminal,
)
from firmware_sim.faults import FaultPlanner
from firmware_sim.harness import PrivateMosquitto
from firmware_sim.mqtt import MqttTerminalLink
from protocols import constants as c
from protocols.constants import FrameType, NakCode
from protocols.errors import DecodeError
from protocols.frames import Ack, Frame, Heartbeat, Nak, Presses, decode, encode

REPO = Path(__file__).resolve().parents[1]
KEYS = {
    1001: bytes.fromhex("000102030405060708090a0b0c0d0e0f"),
    1002: bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f"),
    1003: bytes(range(16, 32)),
    1004: bytes(range(32, 48)),
}
FAST: dict[str, object] = {
    "reconnect": BackoffOptions(initial=0.01, maximum=0.05),
    "busy": BackoffOptions(initial=0.01, maximum=0.05),
    "answer_timeout": 5.0,
    "connect_timeout": 5.0,
}


@dataclass(frozen=True, slots=True)
class Received:
    frame: Frame
    received_at: int


@dataclass(frozen=True, slots=True)
class Committed:
    ts: int
    button: int
    followup: int
    corrected: int | None
    """ts + (received - sent_at) for CLOCK_UNSYNCED frames (spec section 6)."""


class ScriptedGateway:
    """A test double of the gateway's MQTT side: commits, ACKs, and misbehaves on request."""

    def __init__(
        self,
        port: int,
        keys: dict[int, bytes],
        *,
        client_id: str = "test-gateway",
        persistent: bool = True,
        answers: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port
        self.keys = keys
        self.client_id = client_id
        self.persistent = persistent
        self.answers = answers
        self.username = username
        self.password = password
        self.received: list[Received] = []
        self.committed: dict[tuple[int, int], Committed] = {}
        self.errors: Counter[str] = Counter()
        self.changed = asyncio.Event()
        # The script: set these from a test.
        self.nak_next: list[NakCode] = []
        """NAK the next PRESSES frames with these codes, in order."""
        self.silent = 0
        """Answer nothing to the next N PRESSES frames."""
        self.hold = False
        """Receive but do not answer PRESSES until ``release()``."""
        self.ack_twice = False
        self.heartbeats_acked = 0
        self._held: list[Received] = []
        self._client: aiomqtt.Client | None = None
        self._online = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ScriptedGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        assert self._task is None
        self._task = asyncio.create_task(self._run(), name=f"double-{self.client_id}")
        async with asyncio.timeout(5):
            await self._online.wait()

    async def stop(self) -> None:
        """Go offline (DISCONNECT); a persistent session keeps collecting for us."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))
        self._online.clear()

    # ------------------------------------------------------------ reading the record

    def presses(self, terminal_id: int | None = None) -> list[Presses]:
        return [
            r.frame
            for r in self.received
            if isinstance(r.frame, Presses)
            and (terminal_id is None or r.frame.terminal_id == terminal_id)
        ]

    def seqs_received(self, terminal_id: int) -> Counter[int]:
        return Counter(rec.seq for f in self.presses(terminal_id) for rec in f.records)

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever the double saw something."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def release(self) -> None:
        """Answer every held frame, in order, and stop holding."""
        self.hold = False
        held, self._held = self._held, []
        assert self._client is not None
        for received in held:
            await self._answer(self._client, received)

    async def publish_answer(self, frame: Frame) -> None:
        """Publish any frame on its terminal's down topic (to script strays)."""
        assert self._client is not None
        await self._publish(self._client, frame)

    # ------------------------------------------------------------ serving

    async def _run(self) -> None:
        while True:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 600 if self.persistent else 0
            client = aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=self.client_id,
                username=self.username,
                password=self.password,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=not self.persistent,
                properties=properties,
                timeout=2,
            )
            try:
                async with client:
                    await client.subscribe("smiley/v1/+/up", qos=1)
                    self._client = client
                    self._online.set()
                    async for message in client.messages:
                        await self._handle(client, str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError:
                # aiomqtt's __aexit__ can turn our cancellation into the MqttError
                # of its disconnect: stop then, do not reconnect.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None
            finally:
                self._client = None
                self._online.clear()
                # aiomqtt cancels its keepalive task without waiting for it (and
                # not at all when a cancellation cuts its __aexit__ short, which
                # hung a loaded CI run), and keeps why the connection ended in a
                # future nobody may have read.
                misc = client._misc_task
                if misc is not None:
                    misc.cancel()
                    await asyncio.wait((misc,))
                if client._disconnected.done() and not client._disconnected.cancelled():
                    client._disconnected.exception()
            await asyncio.sleep(0.05)  # reconnect pause (the broker is restarting)

    async def _handle(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        topic_id = int(topic.split("/")[2])
        try:
            frame = decode(payload, self.keys.get)
        except DecodeError as exc:
            self.errors[exc.name] += 1
            self.changed.set()
            # Nothing goes back for what cannot be tied to a known terminal (spec 5).
            known = exc.terminal_id == topic_id and topic_id in self.keys
            if self.answers and exc.nak_code is NakCode.BAD_CRC and known:
                await self._publish(client, Nak(topic_id, NakCode.BAD_CRC, exc.ref_seq))
            return
        assert frame.terminal_id == topic_id
        received = Received(frame, int(time.time()))
        self.received.append(received)
        self.changed.set()
        if not self.answers:
            return
        if isinstance(frame, Presses) and self.hold:
            self._held.append(received)
            return
        await self._answer(client, received)

    async def _answer(self, client: aiomqtt.Client, received: Received) -> None:
        frame = received.frame
        now = int(time.time())
        answer: Frame
        match frame:
            case Presses() if self.nak_next:
                answer = Nak(frame.terminal_id, self.nak_next.pop(0), frame.first_seq)
            case Presses() if self.silent:
                self.silent -= 1
                return
            case Presses():
                for record in frame.records:
                    shift = received.received_at - frame.sent_at
                    self.committed.setdefault(
                        (frame.terminal_id, record.seq),
                        Committed(
                            record.ts,
                            record.button,
                            record.followup,
                            record.ts + shift if frame.clock_unsynced else None,
                        ),
                    )
                answer = Ack(frame.terminal_id, FrameType.PRESSES, frame.last_seq, now)
            case Heartbeat():
                answer = Ack(frame.terminal_id, FrameType.HEARTBEAT, 0, now)
            case _:
                raise AssertionError(f"unexpected {frame}")
        await self._publish(client, answer)
        if isinstance(frame, Heartbeat):
            self.heartbeats_acked += 1
        if self.ack_twice and isinstance(answer, Ack):
            await self._publish(client, answer)

    async def _publish(self, client: aiomqtt.Client, frame: Frame) -> None:
        topic = f"smiley/v1/{frame.terminal_id}/down"
        await client.publish(topic, encode(frame, self.keys[frame.terminal_id]), qos=1, timeout=2)
        self.changed.set()


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
async def gateway(broker: PrivateMosquitto) -> AsyncIterator[ScriptedGateway]:
    async with ScriptedGateway(broker.port, KEYS) as double:
        yield double


def link_to(broker: PrivateMosquitto, **overrides: object) -> MqttLinkOptions:
    options: dict[str, object] = {**FAST, **overrides}
    return MqttLinkOptions("127.0.0.1", broker.port, **options)  # type: ignore[arg-type]


def keys_of(*terminal_ids: int) -> dict[int, bytes]:
    return {tid: KEYS[tid] for tid in terminal_ids}


def assert_store_matches_report(gateway: ScriptedGateway, fleet: Fleet) -> None:
    acked = fleet.report.acked
    assert set(gateway.committed) == set(acked)
    for key, made in acked.items():
        stored = gateway.committed[key]
        assert (stored.ts, stored.button, stored.followup) == (made.ts, made.button, made.followup)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("protocol", [MqttProtocol.V5, MqttProtocol.V311])
async def test_every_press_is_acked_exactly_once(
    broker: PrivateMosquitto, gateway: ScriptedGateway, protocol: MqttProtocol
) -> None:
    options = FleetOptions(pattern=Steady(rate=400), seed=7)
    keys = keys_of(1001, 1002, 1003)
    async with Fleet(keys, link_to(broker, protocol=protocol), options) as fleet:
        await fleet.run(presses=150)
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report
        assert report.made_count == report.acked_count == 150
        assert_store_matches_report(gateway, fleet)
        for tid in keys:
            terminal = report[tid]
            assert sorted(terminal.records) == list(range(len(terminal.records)))
            assert set(terminal.sends.values()) == {1}
            assert gateway.seqs_received(tid) == Counter(dict.fromkeys(terminal.records, 1))
            assert (terminal.duplicate_acks, terminal.republishes) == (0, 0)
            assert terminal.unmatched_answers == 0
            assert terminal.naks == Counter()
            assert terminal.connects == terminal.sessions == 1
            assert fleet.terminals[tid].pending == {}
            assert fleet.terminals[tid].frames == {}
        for made in report.made.values():
            assert not made.unsynced
            assert abs(made.ts - made.true_time) <= 2
    summary = json.loads(json.dumps(fleet.report.summary(include_records=True)))
    assert summary["totals"]["acked"] == 150


async def test_a_silent_gateway_makes_the_terminal_republish(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    gateway.silent = 1
    async with Fleet(keys_of(1001), link_to(broker, answer_timeout=0.3)) as fleet:
        await fleet.wait_connected()
        for button in (1, 2, 3):
            fleet.press(1001, button)
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        assert report.republishes == 1
        assert report.sends == Counter({0: 2, 1: 2, 2: 2})
        assert gateway.seqs_received(1001) == Counter({0: 2, 1: 2, 2: 2})
        assert report.connects == 1  # no answer is no reason to reconnect
        assert_store_matches_report(gateway, fleet)


async def test_busy_keeps_the_records_and_retries(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    gateway.nak_next = [NakCode.BUSY, NakCode.BUSY]
    async with Fleet(keys_of(1001), link_to(broker)) as fleet:
        await fleet.wait_connected()
        for _ in range(5):
            fleet.press(1001)
        await gateway.until(lambda: len(gateway.presses()) >= 2)
        assert sorted(fleet.terminals[1001].pending) == [0, 1, 2, 3, 4]
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        assert report.naks == Counter({"BUSY": 2})
        assert report.republishes == 2
        assert gateway.seqs_received(1001) == Counter(dict.fromkeys(range(5), 3))
        assert_store_matches_report(gateway, fleet)


async def test_a_bad_crc_is_naked_and_the_frame_resent(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    async with Fleet(keys_of(1001), link_to(broker)) as fleet:
        await fleet.wait_connected()
        fleet.inject(1001, Fault.CORRUPT_CRC)
        for _ in range(3):
            fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        assert gateway.errors == Counter({"BAD_CRC": 1})
        assert report.naks == Counter({"BAD_CRC": 1})
        assert report.sends == Counter({0: 2, 1: 2, 2: 2})
        assert report.connects == 1
        assert_store_matches_report(gateway, fleet)


async def test_garbage_is_quarantined_and_changes_nothing(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    async with Fleet(keys_of(1001), link_to(broker)) as fleet:
        await fleet.wait_connected()
        fleet.inject(1001, Fault.GARBAGE)
        fleet.inject(1001, Fault.SPLIT_WRITE)  # means nothing on MQTT: ignored
        fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        await gateway.until(lambda: gateway.errors["BAD_MAGIC"] == 1)
        report = fleet.report[1001]
        assert report.faults == Counter({"garbage": 1})
        assert report.sends == Counter({0: 1})
        assert (report.connects, report.naks) == (1, Counter())
        assert_store_matches_report(gateway, fleet)


async def test_a_drop_after_the_publish_gets_its_ack_from_the_session(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    async with Fleet(keys_of(1001), link_to(broker, answer_timeout=30.0)) as fleet:
        await fleet.wait_connected()
        fleet.inject(1001, Fault.DROP)
        fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        # Published once: the ACK waited in the terminal's session for the reconnect.
        assert report.sends == Counter({0: 1})
        assert report.session_ends == Counter({"drop": 1})
        assert report.connects == 2
        assert_store_matches_report(gateway, fleet)


async def test_a_frame_cut_by_a_drop_is_published_again_on_reconnect(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    async with Fleet(keys_of(1001), link_to(broker, answer_timeout=30.0)) as fleet:
        await fleet.wait_connected()
        fleet.inject(1001, Fault.DROP_MID_FRAME)
        fleet.press(1001, 4, 16)
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        assert report.session_ends == Counter({"drop_mid_frame": 1})
        assert report.sends == Counter({0: 2})
        assert gateway.seqs_received(1001) == Counter({0: 1})  # the cut one never got out
        assert_store_matches_report(gateway, fleet)


async def test_power_loss_sends_unsynced_frames_until_an_ack_syncs_the_clock(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    async with Fleet(keys_of(1001), link_to(broker)) as fleet:
        await fleet.wait_connected()
        before = fleet.press(1001, 3)
        await fleet.wait_all_acked(timeout=5)
        gateway.hold = True
        fleet.power_loss(1001)
        lost = fleet.press(1001, 1, 2)  # before the reconnect
        await gateway.until(lambda: lost.seq in gateway.seqs_received(1001))
        still_lost = fleet.press(1001, 2)  # reconnected, but no ACK yet
        await gateway.until(lambda: still_lost.seq in gateway.seqs_received(1001))
        assert not fleet.terminals[1001].clock.synced
        await gateway.release()
        await fleet.wait_all_acked(timeout=5)
        assert fleet.terminals[1001].clock.synced
        after = fleet.press(1001, 4)
        await fleet.wait_all_acked(timeout=5)

    assert not before.unsynced
    assert not after.unsynced
    for made in (lost, still_lost):
        assert made.unsynced
        assert POWER_ON_TIME <= made.ts < POWER_ON_TIME + 60
        corrected = gateway.committed[(1001, made.seq)].corrected
        assert corrected is not None
        assert abs(corrected - made.true_time) <= 2
    frames = gateway.presses(1001)
    assert [f.clock_unsynced for f in frames] == [False, True, True, False]
    assert all(POWER_ON_TIME <= f.sent_at < POWER_ON_TIME + 60 for f in frames[1:3])
    assert abs(frames[3].records[0].ts - after.true_time) <= 2
    report = fleet.report[1001]
    assert (report.power_losses, report.session_ends["power_loss"]) == (1, 1)
    assert_store_matches_report(gateway, fleet)


async def test_heartbeats_are_acked_but_do_not_set_the_clock(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    async with Fleet(keys_of(1001), link_to(broker, heartbeat_interval=0.05)) as fleet:
        await fleet.wait_connected()
        first = fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        fleet.power_loss(1001)
        acked_before = gateway.heartbeats_acked
        await gateway.until(lambda: gateway.heartbeats_acked >= acked_before + 3)
        # Answers on one topic arrive in order: once this duplicate is counted, the
        # terminal has handled the heartbeat ACKs before it.
        await gateway.publish_answer(Ack(1001, FrameType.PRESSES, first.seq, int(time.time())))
        report = fleet.report[1001]
        await fleet.report.wait_for(lambda: report.duplicate_acks >= 1, timeout=5)
        assert not fleet.terminals[1001].clock.synced
        heartbeats = [r.frame for r in gateway.received if isinstance(r.frame, Heartbeat)]
        assert POWER_ON_TIME <= heartbeats[-1].clock < POWER_ON_TIME + 60
        assert heartbeats[-1].battery_pct == c.MAINS_POWERED
        assert report.frames_sent["HEARTBEAT"] >= 3
        assert (report.gateway_error_count, report.unmatched_answers) == (0, 0)


async def test_presses_published_while_the_gateway_is_away_reach_it_when_it_is_back(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    # A long answer timeout: every ACK must come from what the broker kept, not a republish.
    async with (
        ScriptedGateway(
            broker.port, KEYS, client_id="watcher", persistent=False, answers=False
        ) as watcher,
        Fleet(keys_of(1001, 1002), link_to(broker, answer_timeout=30.0)) as fleet,
    ):
        await fleet.wait_connected()
        fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        await gateway.stop()
        away = [fleet.press(tid) for tid in (1001, 1002, 1001, 1002, 1001)]
        await watcher.until(lambda: len(watcher.seqs_received(1001)) == 4)
        await watcher.until(lambda: len(watcher.seqs_received(1002)) == 2)
        assert fleet.report.acked_count == 1
        await gateway.start()
        await fleet.wait_all_acked(timeout=5)
        for made in away:
            assert gateway.seqs_received(made.terminal_id)[made.seq] == 1
        assert fleet.report.totals()["republishes"] == 0
        assert_store_matches_report(gateway, fleet)


async def test_a_broker_restart_loses_nothing(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    options = FleetOptions(pattern=Steady(rate=150), seed=5)
    link = link_to(broker, answer_timeout=1.0, max_records=5)
    async with Fleet(keys_of(1001, 1002, 1003), link, options) as fleet:
        running = asyncio.create_task(fleet.run(presses=240))
        await fleet.wait_acked(40, timeout=5)
        await broker.restart()
        await running
        await fleet.wait_all_acked(timeout=15)
        assert fleet.report.made_count == fleet.report.acked_count == 240
        assert all(fleet.report[tid].connects >= 2 for tid in (1001, 1002, 1003))
        assert fleet.report.totals()["gateway_errors"] == 0
        assert_store_matches_report(gateway, fleet)


async def test_duplicate_and_stray_acks_change_nothing(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    gateway.ack_twice = True
    async with Fleet(keys_of(1001), link_to(broker)) as fleet:
        await fleet.wait_connected()
        # Answers on one topic arrive in order: this stray comes before any real ACK,
        # and the second ACK of a frame before the first ACK of the next one.
        await gateway.publish_answer(Ack(1001, FrameType.PRESSES, 999, int(time.time())))
        for _ in range(3):
            fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        fleet.press(1001)
        await fleet.wait_all_acked(timeout=5)
        report = fleet.report[1001]
        assert sorted(report.acked) == [0, 1, 2, 3]
        assert report.sends == Counter(dict.fromkeys(range(4), 1))
        assert report.unmatched_answers == 1
        assert report.duplicate_acks >= 3
        assert report.gateway_error_count == 0
        assert_store_matches_report(gateway, fleet)


async def test_open_frames_and_the_session_outlive_a_run(
    broker: PrivateMosquitto, gateway: ScriptedGateway, tmp_path: Path
) -> None:
    options = FleetOptions(pattern=Steady(0), state_dir=tmp_path, name="mqtt")
    link = link_to(broker, answer_timeout=30.0)
    gateway.hold = True
    async with Fleet(keys_of(1001), link, options) as first:
        await first.wait_connected()
        for _ in range(3):
            first.press(1001)
        await gateway.until(lambda: len(gateway.seqs_received(1001)) == 3)
    assert json.loads((tmp_path / "mqtt.json").read_text())["terminals"]["1001"]["frames"] == [
        [0, 2]
    ]
    await gateway.release()  # the ACK waits in the terminal's session, for the next run

    async with Fleet(keys_of(1001), link, options) as again:
        assert again.report[1001].restored == {0, 1, 2}
        await again.wait_all_acked(timeout=5)
        assert sorted(again.report[1001].acked) == [0, 1, 2]
        assert again.terminals[1001].frames == {}
    assert set(gateway.committed) == {(1001, 0), (1001, 1), (1001, 2)}


async def test_saved_frames_that_do_not_fit_their_records_are_dropped() -> None:
    def restored(frames: dict[int, int]) -> dict[int, int]:
        """The frames a link keeps of ``frames``, with seqs 0..9 made and 8 ACKed."""
        terminal = Terminal(1001, KEYS[1001], frames=frames)
        for _ in range(10):
            terminal.press(3)
        terminal.acknowledge(8, 8)  # seq 8 is done: a frame over it cannot be open
        MqttTerminalLink(
            terminal,
            MqttLinkOptions("127.0.0.1"),
            report=FleetReport([1001])[1001],
            faults=FaultPlanner(FaultOptions(), random.Random(0)),
            rng=random.Random(0),
            max_pending=100,
            on_change=lambda: None,
        )
        return terminal.frames

    # Kept: whole, disjoint, all pending, below every record in no frame.
    assert restored({0: 2, 3: 5, 7: 8, 2: 4}) == {0: 2, 3: 5}
    # Records 0..2 in no frame lie below 3..5: that frame goes too (no gaps behind frames).
    assert restored({3: 5}) == {}


async def test_random_faults_lose_nothing(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
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
    link = link_to(broker, max_records=8, answer_timeout=1.0)
    async with Fleet(keys_of(1001, 1002, 1003, 1004), link, options) as fleet:
        await fleet.run(presses=300)
        await fleet.wait_all_acked(timeout=15)
        assert_store_matches_report(gateway, fleet)
        totals = fleet.report.totals()
        assert totals["made"] == 300
        assert totals["power_losses"] >= 2
        assert set(totals["faults"]) >= {"garbage", "corrupt_crc", "power_loss"}
        assert "split_write" not in totals["faults"]
        for key, stored in gateway.committed.items():
            made = fleet.report.acked[key]
            if stored.corrected is not None:
                assert made.unsynced
                assert abs(stored.corrected - made.true_time) <= 3
            else:
                assert not made.unsynced


PASSWORDS = {1001: "secret-1001", 1002: "secret-1002"}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    """A Mosquitto password file for the gateway double and terminals 1001 and 1002."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs the mosquitto_passwd command")
    path = tmp_path / "passwords"
    for user, password in [("gateway", "gw"), *((str(t), p) for t, p in PASSWORDS.items())]:
        flags = ["-b"] if path.exists() else ["-c", "-b"]
        command = ["mosquitto_passwd", *flags, str(path), user, password]
        subprocess.run(command, check=True, capture_output=True)
    return path


async def test_passwords_over_mqtt_3_1_1(tmp_path: Path, password_file: Path) -> None:
    mosquitto = PrivateMosquitto(
        tmp_path / "broker",
        extra_config=f"allow_anonymous false\npassword_file {password_file}",
    )
    await mosquitto.start()
    try:
        double = ScriptedGateway(mosquitto.port, KEYS, username="gateway", password="gw")
        link = link_to(mosquitto, protocol=MqttProtocol.V311, password=PASSWORDS)
        async with double, Fleet(keys_of(1001, 1002), link, FleetOptions(Steady(0))) as fleet:
            await fleet.run(presses=20)
            await fleet.wait_all_acked(timeout=5)
            assert_store_matches_report(double, fleet)
            assert fleet.report.totals()["connect_failures"] == 0
    finally:
        await mosquitto.stop()


async def test_cancelling_a_run_leaves_no_tasks(
    broker: PrivateMosquitto, gateway: ScriptedGateway
) -> None:
    link = link_to(broker)
    async with Fleet(keys_of(1001, 1002), link, FleetOptions(Steady(200))) as fleet:
        running = asyncio.create_task(fleet.run())
        await fleet.wait_acked(10, timeout=5)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert fleet.report.made


async def test_cli_runs_a_fleet_over_mqtt(
    broker: PrivateMosquitto, gateway: ScriptedGateway, tmp_path: Path
) -> None:
    registry = tmp_path / "terminals.toml"
    registry.write_text(
        "".join(f'[[terminal]]\nid = {tid}\nkey = "{key.hex()}"\n' for tid, key in KEYS.items()),
        encoding="utf-8",
    )
    report_path = tmp_path / "report.json"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "firmware_sim", "mqtt", "--port", str(broker.port)),
        *("--registry", str(registry), "--terminals", "2", "--presses", "30", "--rate", "100"),
        *("--faults", "crc=0.2,split=0.5", "--answer-timeout", "2", "--mqtt-version", "3.1.1"),
        *("--report", str(report_path), "--wait", "10"),
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
