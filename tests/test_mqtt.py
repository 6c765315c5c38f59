"""MQTT ingest through a real (private) Mosquitto: answers, refusals, PUBACK after commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiomqtt

from firmware_sim.harness import (
    CuttableLink,
    GatewayProcess,
    PrivateMosquitto,
    export_rows,
    free_port,
)
from gateway.transports.mqtt import _paho, topic_terminal
from protocols.constants import FrameType, NakCode
from protocols.frames import Ack, Nak, Presses, PressRecord, decode, encode
from tests.conftest import GatewayHarness
from tests.support import KEYS, VECTOR_HEX, write_config
from tests.test_tcp import quarantined, stored


def mqtt_section(
    port: int, client_id: str = "gw-test", extra: str = "", max_in_flight: int = 20
) -> str:
    return f"""
[mqtt]
url = "mqtt://127.0.0.1:{port}"
client_id = "{client_id}"
max_in_flight = {max_in_flight}
reconnect_max_s = 1
{extra}
"""


class Terminal:
    """A test-side MQTT terminal: publishes on its up topic, reads its down topic."""

    def __init__(self, client: aiomqtt.Client, terminal_id: int) -> None:
        self.client = client
        self.terminal_id = terminal_id

    async def publish(self, payload: bytes, topic: str | None = None) -> None:
        await self.client.publish(topic or f"smiley/v1/{self.terminal_id}/up", payload, qos=1)

    async def answer(self, timeout: float = 10.0) -> object:
        async with asyncio.timeout(timeout):
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                return decode(message.payload, KEYS.get, zero_tag_naks=True)
        raise AssertionError("subscription ended")


async def terminal(port: int, terminal_id: int = 1001) -> Terminal:
    client = aiomqtt.Client(
        "127.0.0.1", port, identifier=f"t-{terminal_id}", protocol=aiomqtt.ProtocolVersion.V5
    )
    await client.__aenter__()
    await client.subscribe(f"smiley/v1/{terminal_id}/down", qos=1)
    return Terminal(client, terminal_id)


async def gateway_with_mqtt(
    tmp_path: Path, broker: PrivateMosquitto, max_in_flight: int = 20
) -> GatewayHarness:
    (tmp_path / "gw").mkdir()
    h = GatewayHarness(
        tmp_path / "gw", extra=mqtt_section(broker.port, max_in_flight=max_in_flight)
    )
    await h.start()
    assert h.gateway is not None
    assert h.gateway.mqtt is not None
    await asyncio.wait_for(h.gateway.mqtt.connected.wait(), 10)
    return h


def presses(first: int, count: int = 3, terminal_id: int = 1001) -> Presses:
    records = tuple(PressRecord(first + i, 1767225600 + i, 1 + i % 4, 0) for i in range(count))
    return Presses(terminal_id, 1767225600 + count, first, 0, records)


def test_topic_terminal() -> None:
    assert topic_terminal("smiley/v1/1001/up") == 1001
    for topic in ("smiley/v1/01001/up", "smiley/v1/x/up", "smiley/v1/1001/down", "a/b"):
        assert topic_terminal(topic) is None


async def test_paho_manual_ack_is_reachable_under_aiomqtt() -> None:
    client = aiomqtt.Client("127.0.0.1", 1883)
    inner = _paho(client)
    inner.manual_ack_set(True)
    assert inner._manual_ack is True


async def test_presses_and_heartbeat_acked_on_the_down_topic(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    h = await gateway_with_mqtt(tmp_path, broker)
    t = await terminal(broker.port)
    await t.publish(VECTOR_HEX["presses"])
    ack = await t.answer()
    assert isinstance(ack, Ack)
    assert (ack.acked_type, ack.acked_seq) == (FrameType.PRESSES, 122)
    await t.publish(VECTOR_HEX["heartbeat"])
    ack = await t.answer()
    assert isinstance(ack, Ack)
    assert (ack.acked_type, ack.acked_seq) == (FrameType.HEARTBEAT, 0)
    await t.publish(VECTOR_HEX["presses"])  # a resend: ACKed again, stored once
    assert isinstance(await t.answer(), Ack)
    rows = await stored(h)
    assert [(p.seq, p.transport) for p in rows] == [(120, "mqtt"), (121, "mqtt"), (122, "mqtt")]
    await t.client.__aexit__(None, None, None)
    await h.stop()


async def test_refusals_are_quarantined_and_answered_only_when_tied_to_a_terminal(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    h = await gateway_with_mqtt(tmp_path, broker)
    t = await terminal(broker.port)
    await t.publish(VECTOR_HEX["bad_crc"])
    assert await t.answer() == Nak(1001, NakCode.BAD_CRC, 120)
    await t.publish(VECTOR_HEX["presses_count_mismatch"])
    assert await t.answer() == Nak(1001, NakCode.MALFORMED, 1)
    await t.publish(VECTOR_HEX["hello"])  # no HELLO on MQTT
    assert await t.answer() == Nak(1001, NakCode.UNSUPPORTED, 0)
    await t.publish(b"not a frame at all")  # cannot be tied to a terminal: no answer
    await t.publish(VECTOR_HEX["presses"], topic="smiley/v1/1002/up")  # topic of another
    await t.publish(VECTOR_HEX["presses"] + b"\x00")  # bytes after the frame
    assert await t.answer() == Nak(1001, NakCode.MALFORMED, 120)
    reasons = sorted(r.row.reason for r in await quarantined(h))
    assert reasons == [
        "BAD_CRC", "BAD_MAGIC", "MALFORMED", "MALFORMED", "TOPIC_MISMATCH", "UNSUPPORTED",
    ]  # fmt: skip
    assert await stored(h) == []
    await t.client.__aexit__(None, None, None)
    await h.stop()


async def test_frames_published_while_the_gateway_is_away_arrive_when_it_is_back(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    h = await gateway_with_mqtt(tmp_path, broker)
    await h.stop()
    t = await terminal(broker.port)
    for n in range(10):
        await t.publish(encode(presses(n * 3), KEYS[1001]))
    await h.start()
    acked: set[int] = set()
    while len(acked) < 10:
        answer = await t.answer()
        assert isinstance(answer, Ack)
        acked.add(answer.acked_seq)
    assert len(await stored(h)) == 30
    await t.client.__aexit__(None, None, None)
    await h.stop()


async def test_broker_restart_and_reconnect_lose_nothing(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    h = await gateway_with_mqtt(tmp_path, broker)
    assert h.gateway is not None
    assert h.gateway.mqtt is not None
    t = await terminal(broker.port)
    await t.publish(encode(presses(0), KEYS[1001]))
    assert isinstance(await t.answer(), Ack)
    await t.client.__aexit__(None, None, None)
    await broker.restart()
    t = await terminal(broker.port)
    await t.publish(encode(presses(3), KEYS[1001]))
    answer = await t.answer(timeout=30)  # the gateway reconnects with backoff
    assert isinstance(answer, Ack)
    assert answer.acked_seq == 5
    assert h.gateway.mqtt.connects >= 2
    assert sorted(p.seq for p in await stored(h)) == list(range(6))
    await t.client.__aexit__(None, None, None)
    await h.stop()


async def test_mosquitto_pub_interop(tmp_path: Path, broker: PrivateMosquitto) -> None:
    h = await gateway_with_mqtt(tmp_path, broker)
    t = await terminal(broker.port, 1002)
    frame_file = tmp_path / "frame.bin"
    frame_file.write_bytes(VECTOR_HEX["presses_clock_unsynced"])
    publisher = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
        "-t", "smiley/v1/1002/up", "-f", str(frame_file),
    )  # fmt: skip
    assert await asyncio.wait_for(publisher.wait(), 30) == 0
    answer = await t.answer()
    assert isinstance(answer, Ack)
    assert answer.acked_seq == 1
    rows = await stored(h)
    assert [(p.terminal_id, p.seq, p.clock_corrected) for p in rows] == [
        (1002, 0, True),
        (1002, 1, True),
    ]
    await t.client.__aexit__(None, None, None)
    await h.stop()


async def test_slow_outbox_stops_intake_at_the_in_flight_bound(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    # 10, under Mosquitto's own default of 20, so the bound seen is the gateway's own.
    h = await gateway_with_mqtt(tmp_path, broker, max_in_flight=10)
    assert h.gateway is not None
    assert h.gateway.mqtt is not None
    outbox = sqlite3.connect(h.directory / "var" / "outbox.db", isolation_level=None)
    outbox.execute("BEGIN EXCLUSIVE")  # the outbox cannot commit
    t = await terminal(broker.port)
    for n in range(100):
        await t.publish(encode(presses(n * 3), KEYS[1001]))
    async with asyncio.timeout(30):  # the broker pushes up to its Receive Maximum...
        while h.gateway.mqtt.messages < 10:  # noqa: ASYNC110 - a counter, no event to await
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # ...and no further: a window in which a 21st could arrive
    assert h.gateway.mqtt.messages == 10  # max_in_flight: the broker holds the other 90
    outbox.execute("ROLLBACK")
    outbox.close()
    acked: set[int] = set()
    while len(acked) < 100:
        answer = await t.answer(timeout=60)
        if isinstance(answer, Ack):
            acked.add(answer.acked_seq)
    assert len(await stored(h)) == 300
    await t.client.__aexit__(None, None, None)
    await h.stop()


async def subscribed_gateway(
    tmp_path: Path, broker: PrivateMosquitto, client_id: str
) -> GatewayProcess:
    """A gateway process on ``broker``, once it has subscribed.

    Listening on TCP is not subscribed on MQTT: on the first start there is no
    session yet to keep a message published before the subscription.
    """
    port = free_port()
    config = write_config(tmp_path, port=port, extra=mqtt_section(broker.port, client_id))
    config.write_text(config.read_text().replace('log_level = "warning"', 'log_level = "info"'))
    gateway = GatewayProcess(config, port)
    await gateway.start()
    async with asyncio.timeout(30):
        while "mqtt_connected" not in gateway.log.read_text():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return gateway


async def test_kill_9_between_receipt_and_commit_then_the_press_arrives(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    gateway = await subscribed_gateway(tmp_path, broker, "gw-kill")
    t = await terminal(broker.port)
    await t.publish(encode(presses(0), KEYS[1001]))
    assert isinstance(await t.answer(), Ack)
    outbox = sqlite3.connect(tmp_path / "var" / "outbox.db", isolation_level=None)
    outbox.execute("BEGIN EXCLUSIVE")  # the next commit cannot happen
    await t.publish(encode(presses(3), KEYS[1001]))
    async with asyncio.timeout(30):  # the gateway has received it and is trying to commit
        while "presses_busy" not in gateway.log.read_text():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await gateway.kill()  # received, not committed, no PUBACK sent
    outbox.execute("ROLLBACK")
    outbox.close()
    await gateway.start()  # the broker redelivers the unacknowledged message
    answer = await t.answer(timeout=30)
    assert isinstance(answer, Ack)
    assert answer.acked_seq == 5
    await t.client.__aexit__(None, None, None)
    assert await gateway.terminate() == 0
    assert sorted(r["seq"] for r in export_rows(gateway.config)) == list(range(6))


async def test_network_cut_between_gateway_and_broker_loses_nothing(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    link = CuttableLink(broker.port)
    await link.start()
    (tmp_path / "gw").mkdir()
    h = GatewayHarness(tmp_path / "gw", extra=mqtt_section(link.port))
    await h.start()
    assert h.gateway is not None
    assert h.gateway.mqtt is not None
    await asyncio.wait_for(h.gateway.mqtt.connected.wait(), 10)
    t = await terminal(broker.port)
    await t.publish(encode(presses(0), KEYS[1001]))
    assert isinstance(await t.answer(), Ack)
    await link.cut()
    for n in range(1, 6):  # published while the gateway cannot reach the broker
        await t.publish(encode(presses(n * 3), KEYS[1001]))
    link.restore()
    expected = {5, 8, 11, 14, 17}
    acked: set[int] = set()
    while not expected <= acked:
        answer = await t.answer(timeout=30)
        assert isinstance(answer, Ack)
        # A frame whose PUBACK the cut swallowed is redelivered and ACKed again.
        acked.add(answer.acked_seq)
    assert acked <= expected | {2}
    assert sorted(p.seq for p in await stored(h)) == list(range(18))
    await t.client.__aexit__(None, None, None)
    await h.stop()
    await link.close()


async def test_gateway_over_mqtts(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    tls_port = free_port()
    broker = PrivateMosquitto(
        tmp_path / "tls-broker",
        extra_config=(
            f"allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
        ),
    )
    await broker.start()
    (tmp_path / "gw").mkdir()
    section = (
        f'[mqtt]\nurl = "mqtts://127.0.0.1:{tls_port}"\nclient_id = "gw-tls"\nca_file = "{cert}"\n'
    )
    h = GatewayHarness(tmp_path / "gw", extra=section)
    await h.start()
    assert h.gateway is not None
    assert h.gateway.mqtt is not None
    await asyncio.wait_for(h.gateway.mqtt.connected.wait(), 10)
    t = await terminal(broker.port)  # the terminal uses the plain listener
    await t.publish(VECTOR_HEX["presses"])
    assert isinstance(await t.answer(), Ack)
    assert [p.seq for p in await stored(h)] == [120, 121, 122]
    await t.client.__aexit__(None, None, None)
    await h.stop()
    await broker.stop()
