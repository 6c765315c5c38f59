"""MQTT batches: one group commit per batch, answers and PUBACKs only after it.

Unit tests drive :meth:`MqttIngest._handle` and :class:`_Link` with recording
stand-ins for paho and the outbox; the last test kills a real gateway process
in the middle of a group and checks the broker redelivers all of it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim.harness import PrivateMosquitto, export_rows, free_port
from gateway.errors import OutboxBusy
from gateway.intake.ingest import Ingest
from gateway.intake.outbox import Outbox
from gateway.registry.config import load_config
from gateway.registry.terminals import load_registry
from gateway.rows import PressRow, RejectRow
from gateway.sqlitedb import _statement_sizes
from gateway.transports.mqtt import MqttIngest, Reply, _Link
from protocols.constants import FrameType, NakCode
from protocols.frames import Ack, Nak, decode, encode
from tests.support import KEYS, VECTOR_HEX, write_config
from tests.test_mqtt import mqtt_section, presses, subscribed_gateway, terminal

NOW = 1767225700.0


class GatedOutbox(Outbox):
    """An outbox whose commits wait for ``gate``, and fail ``busy`` times first."""

    gate: asyncio.Event
    busy: int
    calls: list[tuple[list[PressRow], list[RejectRow]]]

    async def commit(self, presses: Sequence[PressRow], rejects: Sequence[RejectRow] = ()) -> None:
        self.calls.append((list(presses), list(rejects)))
        await self.gate.wait()
        if self.busy:
            self.busy -= 1
            raise OutboxBusy("outbox cannot commit: locked")
        await super().commit(presses, rejects)


class RecordingLink(_Link):
    """Answers are recorded, in order, instead of going to a broker."""

    def __init__(self) -> None:
        super().__init__(paho.Client(CallbackAPIVersion.VERSION2))
        self.answered: list[tuple[int, object]] = []

    async def answer(self, message: paho.MQTTMessage, reply: Reply | None) -> bool:
        decoded = None if reply is None else decode(reply[1], KEYS.get)
        self.answered.append((message.mid, decoded))
        return True


class RecordingPaho(paho.Client):
    """paho that records what it would write, in order, and never connects."""

    def __init__(self) -> None:
        super().__init__(CallbackAPIVersion.VERSION2)
        self.written: list[tuple[str, int]] = []
        self.publish_rc = paho.MQTT_ERR_SUCCESS
        self._next_mid = 100

    def publish(
        self, topic: str, payload: Any = None, qos: int = 0, *args: Any, **kwargs: Any
    ) -> paho.MQTTMessageInfo:
        self._next_mid += 1
        info = paho.MQTTMessageInfo(self._next_mid)
        info.rc = self.publish_rc
        if info.rc == paho.MQTT_ERR_SUCCESS:
            self.written.append(("PUBLISH " + topic, self._next_mid))
        return info

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        self.written.append(("PUBACK", mid))
        return paho.MQTT_ERR_SUCCESS


def message(mid: int, payload: bytes, terminal_id: int = 1001) -> paho.MQTTMessage:
    m = paho.MQTTMessage(mid, f"smiley/v1/{terminal_id}/up".encode())
    m.payload = payload
    m.qos = 1
    return m


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[GatedOutbox]:
    opened = await GatedOutbox.open(tmp_path / "var" / "outbox.db", max_mb=64)
    assert isinstance(opened, GatedOutbox)
    opened.gate, opened.busy, opened.calls = asyncio.Event(), 0, []
    writer = asyncio.create_task(opened.run())
    yield opened
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    await opened.close()


def mqtt_ingest(tmp_path: Path, outbox: Outbox) -> MqttIngest:
    config = load_config(write_config(tmp_path, port=free_port(), extra=mqtt_section(1)), env={})
    registry = load_registry(tmp_path / "terminals.toml")
    return MqttIngest(config, Ingest(registry, outbox), registry, clock=lambda: NOW)


async def until(condition: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - a stand-in's record, no event to await
            await asyncio.sleep(0.01)


async def test_a_batch_is_one_commit_and_answered_only_after_it(
    tmp_path: Path, outbox: GatedOutbox
) -> None:
    mqtt = mqtt_ingest(tmp_path, outbox)
    link = RecordingLink()
    batch = [
        message(1, encode(presses(0), KEYS[1001])),
        message(2, encode(presses(0, terminal_id=1002), KEYS[1002]), terminal_id=1002),
        message(3, VECTOR_HEX["heartbeat"]),
        message(4, VECTOR_HEX["bad_crc"]),
        message(5, encode(presses(0), KEYS[1001])),  # a resend inside the same batch
    ]
    handling = asyncio.create_task(mqtt._handle(link, batch))
    await until(lambda: outbox.calls)
    await asyncio.sleep(0.1)
    # The heartbeat needs no commit: answered at once. Nothing else before the commit.
    assert [mid for mid, _ in link.answered] == [3]
    [(press_rows, reject_rows)] = outbox.calls  # one commit for the whole batch
    assert len(press_rows) == 9
    assert [r.reason for r in reject_rows] == ["BAD_CRC"]
    outbox.gate.set()
    await asyncio.wait_for(handling, 10)
    assert link.answered[1:] == [
        (1, Ack(1001, FrameType.PRESSES, 2, int(NOW))),
        (2, Ack(1002, FrameType.PRESSES, 2, int(NOW))),
        (4, Nak(1001, NakCode.BAD_CRC, 120)),
        (5, Ack(1001, FrameType.PRESSES, 2, int(NOW))),
    ]
    assert outbox.committed_presses == 6  # the resend is deduplicated by (terminal_id, seq)
    assert mqtt._ingest.counters.quarantined == {"BAD_CRC": 1}


async def test_an_outbox_that_refuses_holds_every_answer_of_the_batch(
    tmp_path: Path, outbox: GatedOutbox
) -> None:
    mqtt = mqtt_ingest(tmp_path, outbox)
    mqtt._commit_backoff_cap = 0.2
    link = RecordingLink()
    outbox.busy = 2
    outbox.gate.set()
    batch = [message(mid, encode(presses(3 * mid), KEYS[1001])) for mid in range(1, 4)]
    await asyncio.wait_for(mqtt._handle(link, batch), 10)
    assert len(outbox.calls) == 3  # two refusals, then the commit
    assert [mid for mid, _ in link.answered] == [1, 2, 3]
    assert outbox.committed_presses == 9


async def test_link_publishes_each_answer_before_its_puback_within_the_brokers_window() -> None:
    inner = RecordingPaho()
    link = _Link(inner)
    properties = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = 2
    link._on_connect(inner, None, {}, 0, properties)
    answers = [
        asyncio.create_task(link.answer(message(mid, b""), (1001, b"answer"))) for mid in (1, 2, 3)
    ]
    await asyncio.sleep(0.05)
    # The third answer waits for a slot: so does its PUBACK.
    assert inner.written == [
        ("PUBLISH smiley/v1/1001/down", 101),
        ("PUBACK", 1),
        ("PUBLISH smiley/v1/1001/down", 102),
        ("PUBACK", 2),
    ]
    link._on_publish(inner, None, 101, 0, properties)  # the broker's PUBACK of the first
    assert await asyncio.gather(*answers) == [True, True, True]
    assert inner.written[4:] == [("PUBLISH smiley/v1/1001/down", 103), ("PUBACK", 3)]


async def test_link_sends_no_puback_when_the_answer_cannot_be_published() -> None:
    inner = RecordingPaho()
    link = _Link(inner)
    inner.publish_rc = paho.MQTT_ERR_NO_CONN
    assert await link.answer(message(1, b""), (1001, b"answer")) is False
    assert inner.written == []  # the broker redelivers the message to the resumed session
    assert await link.answer(message(2, b""), None) is True  # no answer: PUBACK only
    assert inner.written == [("PUBACK", 2)]


async def test_kill_9_in_the_middle_of_a_group_loses_nothing(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    gateway = await subscribed_gateway(tmp_path, broker, "gw-group")
    terminals = [await terminal(broker.port, 1001), await terminal(broker.port, 1002)]
    outbox = sqlite3.connect(tmp_path / "var" / "outbox.db", isolation_level=None)
    outbox.execute("BEGIN EXCLUSIVE")  # every commit of the groups below fails
    for n in range(8):
        for t in terminals:
            await t.publish(encode(presses(n * 3, terminal_id=t.terminal_id), KEYS[t.terminal_id]))
    async with asyncio.timeout(30):  # received, grouped, and trying to commit
        while "presses_busy" not in gateway.log.read_text():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await gateway.kill()  # no PUBACK was sent for any of them
    outbox.execute("ROLLBACK")
    outbox.close()
    await gateway.start()  # the broker redelivers all 16 messages
    for t in terminals:
        acked: set[int] = set()
        while len(acked) < 8:
            answer = await t.answer(timeout=30)
            assert isinstance(answer, Ack)
            acked.add(answer.acked_seq)
        assert acked == {n * 3 + 2 for n in range(8)}
        await t.client.__aexit__(None, None, None)
    assert await gateway.terminate() == 0
    rows = export_rows(gateway.config)
    for terminal_id in (1001, 1002):
        seqs = sorted(r["seq"] for r in rows if r["terminal_id"] == terminal_id)
        assert seqs == list(range(24))  # every press once: none lost, none doubled


@pytest.mark.parametrize("json_rows", [True, False])
async def test_outbox_inserts_many_rows_a_statement_and_reads_them_back_alike(
    tmp_path: Path, json_rows: bool
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", max_mb=64, json_rows=json_rows)
    writer = asyncio.create_task(outbox.run())
    rows = [
        PressRow(1001, seq, 1767225600 + seq, -12600, 1 + seq % 4, seq % 17, seq % 2 == 0,
                 'mq"tt', 1767225600123 + seq)
        for seq in range(250)
    ]  # fmt: skip
    await outbox.commit(rows[:130])  # one statement of 100 rows, one of 30
    await outbox.commit(rows[100:])  # 30 resends, ignored and not counted
    assert outbox.committed_presses == 250
    assert outbox.next_seq(1001) == 250
    pending = await outbox.pending(1000)
    assert pending.presses == rows  # in order, values and types as committed
    assert [type(p.clock_corrected) for p in pending.presses[:2]] == [bool, bool]
    assert pending.press_upto is not None
    await outbox.forwarded(pending)
    assert len(await outbox.pending(1000)) == 0
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    await outbox.close()


async def test_outbox_group_of_thousands_of_presses_is_a_few_statements(tmp_path: Path) -> None:
    assert _statement_sizes(2345, 9) == [(1000, 2), (100, 3), (45, 1)]
    assert _statement_sizes(99, 2) == [(99, 1)]
    outbox = await Outbox.open(tmp_path / "outbox.db", max_mb=64)
    writer = asyncio.create_task(outbox.run())
    rows = [
        PressRow(t, seq, 1767225600 + seq, 7200, 1, 0, False, "mqtt", 0)
        for t in (1001, 1002, 1003)
        for seq in range(780)
    ]  # 2340 rows in one commit
    await asyncio.gather(outbox.commit(rows), outbox.commit(rows[:5]))  # resends in the group
    assert outbox.committed_presses == 2340
    assert [outbox.next_seq(t) for t in (1001, 1002, 1003, 1004)] == [780, 780, 780, 0]
    assert (await outbox.pending(5000)).presses == rows
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    await outbox.close()


async def test_a_cancellation_aiomqtt_turns_into_an_error_still_stops_the_ingest(
    tmp_path: Path, outbox: GatedOutbox
) -> None:
    """aiomqtt's __aexit__ may raise the MqttError of its disconnect in place of the
    CancelledError it was given; the reconnect loop must still end, not reconnect."""
    mqtt = mqtt_ingest(tmp_path, outbox)
    sessions = 0

    async def session() -> None:
        nonlocal sessions
        sessions += 1
        if sessions > 1:  # reconnecting after the cancellation: the bug; end so the test fails
            raise asyncio.CancelledError
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise aiomqtt.MqttError("Disconnected during message iteration") from None

    mqtt._session = session  # type: ignore[method-assign]
    running = asyncio.create_task(mqtt.run())
    await until(lambda: sessions == 1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await running
    assert sessions == 1
