"""The store's Mosquitto (deploy/mosquitto/) holds: access control, sessions, offline queue.

Every broker here runs the shipped ``smiley.conf`` and ``acl``, changed only
where a test must (:func:`store_config`): the listener port, the directories
(persistence, password file, log) and the user it runs as. The password file
is written by :mod:`gateway.mqtt_credentials` for terminals 1001 and 1002 of
deploy/terminals.example.toml plus the gateway user. The clients are real
(aiomqtt): terminals speak MQTT 3.1.1, the gateway MQTT 5 with a persistent
session, as gateway/transports/mqtt.py does. Payloads are real frames.

"Never arrives" is shown without sleeping: the forbidden message is published
and acknowledged (so the broker has routed or dropped it) before a permitted
marker is published, and the broker delivers to a client in order; so when
the marker arrives first, the forbidden message was not delivered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import os
import ssl
import stat
import subprocess
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim.harness import PrivateMosquitto, free_port, user_line
from gateway.errors import GatewayError, RegistryError
from gateway.registry.mqtt_credentials import (
    GATEWAY_USER,
    terminal_password,
    write_password_file,
)
from gateway.registry.terminals import load_registry
from protocols.constants import FrameType
from protocols.frames import Ack, Presses, PressRecord, encode
from tests.support import REPO

DEPLOY = REPO / "deploy" / "mosquitto"
SHIPPED_CONF = DEPLOY / "smiley.conf"
SHIPPED_ACL = DEPLOY / "acl"
EXAMPLE_REGISTRY = load_registry(REPO / "deploy" / "terminals.example.toml")
REGISTRY = dataclasses.replace(
    EXAMPLE_REGISTRY, terminals={i: EXAMPLE_REGISTRY.terminals[i] for i in (1001, 1002)}
)
GATEWAY_PASSWORD = "gateway-test-password-4f1c9a"
PASSWORDS = {str(i): terminal_password(t.key) for i, t in REGISTRY.terminals.items()}
PASSWORDS[GATEWAY_USER] = GATEWAY_PASSWORD
UP = "smiley/v1/+/up"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
SESSION_EXPIRY_S = 7 * 24 * 3600  # the gateway's mqtt.session_expiry_s


def up(terminal_id: int) -> str:
    return f"smiley/v1/{terminal_id}/up"


def down(terminal_id: int) -> str:
    return f"smiley/v1/{terminal_id}/down"


def press(terminal_id: int, seq: int) -> bytes:
    """A PRESSES frame of one record as the terminal sends it, tagged with its key."""
    frame = Presses(terminal_id, T0 + seq + 1, seq, 0, (PressRecord(seq, T0 + seq, 3, 0),))
    return encode(frame, EXAMPLE_REGISTRY.terminals[terminal_id].key)


def ack(terminal_id: int, seq: int) -> bytes:
    """An ACK frame as the gateway sends it."""
    frame = Ack(terminal_id, FrameType.PRESSES, seq, T0 + seq)
    return encode(frame, EXAMPLE_REGISTRY.terminals[terminal_id].key)


# --- the broker: the shipped configuration, adapted only where a test must ---------------


def store_config(
    *, port: int, directory: Path, password_file: Path, overrides: Mapping[str, str] | None = None
) -> str:
    """smiley.conf with only the lines a test cannot keep replaced, each found exactly once."""
    changes = {
        "user": user_line(),  # stay the test user: mosquitto's could not write in tmp_path
        "listener": f"listener {port} 127.0.0.1",
        "persistence_location": f"persistence_location {directory}/",
        "password_file": f"password_file {password_file}",
        "acl_file": f"acl_file {SHIPPED_ACL}",  # the shipped file itself
        "log_dest": f"log_dest file {directory / 'mosquitto.log'}",
        **(overrides or {}),
    }
    lines = SHIPPED_CONF.read_text(encoding="utf-8").splitlines()
    for directive, line in changes.items():
        found = [i for i, text in enumerate(lines) if text.split(maxsplit=1)[:1] == [directive]]
        assert len(found) == 1, f"smiley.conf has {len(found)} lines {directive!r}, expected one"
        lines[found[0]] = line
    return "\n".join(lines) + "\n"


def store_broker(tmp_path: Path, overrides: Mapping[str, str] | None = None) -> PrivateMosquitto:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    password_file = etc / "smiley.passwd"
    write_password_file(password_file, REGISTRY, GATEWAY_PASSWORD)
    directory = tmp_path / "broker"
    port = free_port()
    config = store_config(
        port=port, directory=directory, password_file=password_file, overrides=overrides
    )
    return PrivateMosquitto(directory, port=port, config=config)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[PrivateMosquitto]:
    broker = store_broker(tmp_path)
    await broker.start()
    yield broker
    await broker.stop()


# --- clients -----------------------------------------------------------------------------


def terminal(port: int, terminal_id: int) -> aiomqtt.Client:
    """A terminal: MQTT 3.1.1, user name its id, password derived from its key."""
    user = str(terminal_id)
    return aiomqtt.Client(
        "127.0.0.1", port, username=user, password=PASSWORDS[user], identifier=f"t{user}"
    )


def session_properties() -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return properties


def gateway(port: int) -> aiomqtt.Client:
    """The gateway as gateway/transports/mqtt.py connects: MQTT 5, a persistent session."""
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        username=GATEWAY_USER,
        password=GATEWAY_PASSWORD,
        identifier=GATEWAY_USER,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=session_properties(),
        max_queued_incoming_messages=0,
    )


async def receive_until(
    client: aiomqtt.Client, marker: bytes, timeout: float = 15
) -> list[tuple[str, bytes]]:
    """(topic, payload) of every message received, up to and including the marker."""
    received: list[tuple[str, bytes]] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            assert isinstance(message.payload, bytes | bytearray)
            received.append((str(message.topic), bytes(message.payload)))
            if message.payload == marker:
                return received
    raise AssertionError(f"the connection ended before the marker; got {len(received)}")


async def connect_and_leave(client: aiomqtt.Client) -> None:
    async with client:
        pass


async def publish_in_order(client: aiomqtt.Client, topic: str, payloads: list[bytes]) -> None:
    """QoS 1, each acknowledged by the broker; a few in flight at a time, in order."""
    for start in range(0, len(payloads), 10):
        batch = payloads[start : start + 10]
        await asyncio.gather(*(client.publish(topic, p, qos=1) for p in batch))


# --- the shipped files --------------------------------------------------------------------


def test_the_shipped_config_is_a_store_config() -> None:
    """The lines the tests swap out hold a store's values; the ones that matter are set."""
    directives = {
        line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1]
        for line in SHIPPED_CONF.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert directives["user"] == "mosquitto"
    assert directives["listener"] == "1883 127.0.0.1"
    assert directives["allow_anonymous"] == "false"
    assert directives["persistence"] == "true"
    assert directives["persistence_location"].startswith("/var/lib/mosquitto")
    assert int(directives["max_queued_messages"]) > 1000
    assert directives["use_username_as_clientid"] == "true"
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for installed in (directives["password_file"], directives["acl_file"]):
        assert installed in readme, f"README.md does not say where {installed} comes from"


def test_the_acl_grants_nothing_else() -> None:
    rules = [
        line.split()
        for line in SHIPPED_ACL.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules == [
        ["pattern", "write", "smiley/v1/%u/up"],
        ["pattern", "read", "smiley/v1/%u/down"],
        ["user", GATEWAY_USER],
        ["topic", "read", "smiley/v1/+/up"],
        ["topic", "write", "smiley/v1/+/down"],
    ]


# --- who may connect ----------------------------------------------------------------------


async def test_terminal_publishes_to_its_up_topic_and_the_gateway_receives_it(
    store: PrivateMosquitto,
) -> None:
    async with gateway(store.port) as gw:
        await gw.subscribe(UP, qos=1)
        async with terminal(store.port, 1001) as t1001:
            await t1001.publish(up(1001), press(1001, 0), qos=1)
        assert await receive_until(gw, press(1001, 0)) == [(up(1001), press(1001, 0))]


@pytest.mark.parametrize("protocol", [aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5])
async def test_wrong_passwords_unknown_users_and_anonymous_are_refused(
    store: PrivateMosquitto, protocol: aiomqtt.ProtocolVersion
) -> None:
    unregistered = EXAMPLE_REGISTRY.terminals[1003]  # in the example fleet, not in this file
    refused: list[tuple[str | None, str | None]] = [
        ("1001", "not-the-password"),
        ("1001", PASSWORDS["1002"]),  # another terminal's password
        ("1001", None),
        ("1003", terminal_password(unregistered.key)),
        (GATEWAY_USER, PASSWORDS["1001"]),
        (None, None),  # anonymous
        (None, GATEWAY_PASSWORD),
    ]
    for username, password in refused:
        client = aiomqtt.Client(
            "127.0.0.1", store.port, username=username, password=password, protocol=protocol
        )
        with pytest.raises(aiomqtt.MqttCodeError) as refusal:
            await connect_and_leave(client)
        # CONNACK: 5 "not authorised" (3.1.1), 135 "Not authorized" (5)
        assert refusal.value.rc in (5, 135), (username, refusal.value)


# --- what a terminal may publish and read -------------------------------------------------


async def test_a_terminal_publishes_only_to_its_own_up_topic(store: PrivateMosquitto) -> None:
    async with (
        gateway(store.port) as gw,
        terminal(store.port, 1001) as t1001,
        terminal(store.port, 1002) as t1002,
    ):
        await gw.subscribe(UP, qos=1)
        await t1001.subscribe(down(1001), qos=1)
        await t1002.subscribe(down(1002), qos=1)
        # Posing as terminal 1002, and forging the gateway's answers to 1002 and to itself.
        await t1001.publish(up(1002), press(1002, 5), qos=1)
        await t1001.publish(down(1002), ack(1002, 5), qos=1)
        await t1001.publish(down(1001), ack(1001, 5), qos=1)
        # Then, on the same connection and from the gateway, what is allowed.
        await t1001.publish(up(1001), press(1001, 6), qos=1)
        await gw.publish(down(1002), ack(1002, 6), qos=1)
        await gw.publish(down(1001), ack(1001, 6), qos=1)

        assert await receive_until(gw, press(1001, 6)) == [(up(1001), press(1001, 6))]
        assert await receive_until(t1002, ack(1002, 6)) == [(down(1002), ack(1002, 6))]
        assert await receive_until(t1001, ack(1001, 6)) == [(down(1001), ack(1001, 6))]


async def test_a_terminal_reads_only_its_own_down_topic(store: PrivateMosquitto) -> None:
    async with (
        gateway(store.port) as gw,
        terminal(store.port, 1001) as t1001,
        terminal(store.port, 1002) as t1002,
    ):
        await gw.subscribe(UP, qos=1)
        await t1002.subscribe(down(1002), qos=1)
        # Mosquitto grants any subscription and checks read access per message.
        for snoop in (down(1002), "smiley/v1/+/down", up(1002), UP, "#", "$SYS/#", down(1001)):
            await t1001.subscribe(snoop, qos=1)

        await t1002.publish(up(1002), press(1002, 0), qos=1)
        await gw.publish(down(1002), ack(1002, 0), qos=1)
        await gw.publish(down(1001), ack(1001, 0), qos=1)

        # 1002's press and answer did flow, to the gateway and to 1002 ...
        assert await receive_until(gw, press(1002, 0)) == [(up(1002), press(1002, 0))]
        assert await receive_until(t1002, ack(1002, 0)) == [(down(1002), ack(1002, 0))]
        # ... and the first thing 1001 sees is its own answer, published after them.
        assert (await receive_until(t1001, ack(1001, 0)))[0] == (down(1001), ack(1001, 0))


async def test_the_gateway_reads_only_up_topics_and_writes_only_down_topics(
    store: PrivateMosquitto,
) -> None:
    async with gateway(store.port) as gw, terminal(store.port, 1001) as t1001:
        for topic in (UP, "smiley/v1/+/down", "#"):
            await gw.subscribe(topic, qos=1)
        await t1001.subscribe(down(1001), qos=1)

        await gw.publish(up(1001), press(1001, 9), qos=1)  # posing as a terminal
        await gw.publish(down(1001), ack(1001, 8), qos=1)  # its job
        assert await receive_until(t1001, ack(1001, 8)) == [(down(1001), ack(1001, 8))]

        await t1001.publish(up(1001), press(1001, 10), qos=1)
        # Neither the forged press nor the answer it wrote came back to it.
        assert (await receive_until(gw, press(1001, 10)))[0] == (up(1001), press(1001, 10))


async def test_a_terminal_cannot_take_over_the_gateway_session(store: PrivateMosquitto) -> None:
    """Without use_username_as_clientid the queued press would be deleted (by ACL recheck)."""
    async with gateway(store.port) as gw:
        await gw.subscribe(UP, qos=1)
    async with terminal(store.port, 1001) as t1001:
        await t1001.publish(up(1001), press(1001, 0), qos=1)  # waits in the gateway's session

    hijacker = aiomqtt.Client(
        "127.0.0.1",
        store.port,
        username="1001",
        password=PASSWORDS["1001"],
        identifier=GATEWAY_USER,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=session_properties(),
    )
    async with hijacker:
        await hijacker.subscribe(UP, qos=1)

    async with gateway(store.port) as gw, terminal(store.port, 1002) as t1002:
        await t1002.publish(up(1002), press(1002, 0), qos=1)
        assert await receive_until(gw, press(1002, 0)) == [
            (up(1001), press(1001, 0)),
            (up(1002), press(1002, 0)),
        ]


# --- the gateway's offline queue ----------------------------------------------------------


@pytest.mark.parametrize("limit", ["shipped", "mosquitto default"])
async def test_presses_queued_for_the_offline_gateway_survive_a_broker_restart(
    tmp_path: Path, limit: str
) -> None:
    """Over 1000 messages wait while the gateway is away, across a restart; none is dropped.

    The control run with Mosquitto's default max_queued_messages (1000) drops
    some, which shows this test can see a drop.
    """
    overrides = {"max_queued_messages": "max_queued_messages 1000"} if limit != "shipped" else {}
    broker = store_broker(tmp_path, overrides)
    await broker.start()
    try:
        async with gateway(broker.port) as gw:
            await gw.subscribe(UP, qos=1)
        # The gateway is away: 1100 presses before the broker restarts, 300 after.
        sent = {
            1001: [press(1001, s) for s in range(900)],
            1002: [press(1002, s) for s in range(500)],
        }
        async with terminal(broker.port, 1001) as t1001, terminal(broker.port, 1002) as t1002:
            await publish_in_order(t1001, up(1001), sent[1001][:700])
            await publish_in_order(t1002, up(1002), sent[1002][:400])
        await broker.restart()
        async with terminal(broker.port, 1001) as t1001, terminal(broker.port, 1002) as t1002:
            await publish_in_order(t1001, up(1001), sent[1001][700:])
            await publish_in_order(t1002, up(1002), sent[1002][400:])

        marker = press(1001, 900)
        async with gateway(broker.port) as gw, terminal(broker.port, 1001) as t1001:
            await t1001.publish(up(1001), marker, qos=1)  # after the queue, once it is back
            received = await receive_until(gw, marker, timeout=30)
    finally:
        await broker.stop()

    queued = received[:-1]
    log = broker.log.read_text(encoding="utf-8")
    if limit == "shipped":
        for terminal_id, payloads in sent.items():
            assert [p for topic, p in queued if topic == up(terminal_id)] == payloads
        assert len(queued) == 1400
        assert "dropped" not in log
    else:
        assert len(queued) == 1000
        assert "Outgoing messages are being dropped for client smiley-gateway" in log


# --- the TLS listener, with per-terminal certificates -------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(pki: Path, name: str, common_name: str, *extensions: str) -> None:
    """``name``.key and ``name``.crt, signed by the test CA."""
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={common_name}", cwd=pki)  # fmt: skip
    (pki / f"{name}.ext").write_text("\n".join(extensions) + "\n", encoding="ascii")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki)  # fmt: skip


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, the broker's certificate for 127.0.0.1, and terminal 1001's (CN=1001)."""
    pki = tmp_path / "pki"
    pki.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=smiley test CA", cwd=pki)  # fmt: skip
    issue(pki, "broker", "127.0.0.1", "subjectAltName=IP:127.0.0.1")
    issue(pki, "t1001", "1001", "extendedKeyUsage=clientAuth")
    return pki


def tls_context(pki: Path, client: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client is not None:
        context.load_cert_chain(pki / f"{client}.crt", pki / f"{client}.key")
    return context


def connect_packet(username: str, password: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with user name and password (client id = user name)."""

    def field(text: str) -> bytes:
        return len(text).to_bytes(2, "big") + text.encode()

    body = field("MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big")
    body += field(username) + field(username) + field(password)
    return bytes([0x10, len(body)]) + body


async def answer_without_certificate(port: int, pki: Path, username: str, password: str) -> bytes:
    """TLS without a client certificate, then CONNECT with a password: what comes back.

    b"" when the broker ends the session (a TLS alert, a reset or a close: which
    one depends on timing), else the first bytes of its answer.
    """
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls_context(pki, None)
        )
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        writer.write(connect_packet(username, password))
        await writer.drain()
        return await asyncio.wait_for(reader.read(4), 10)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


async def test_the_tls_variant_takes_the_user_name_from_the_terminal_certificate(
    tmp_path: Path, pki: Path
) -> None:
    """The commented TLS block, uncommented: CN=1001 is user 1001, under the same ACL."""
    tls_port = free_port()
    enable = {
        "#listener": f"listener {tls_port} 127.0.0.1",  # not on the test machine's network
        "#cafile": f"cafile {pki / 'ca.crt'}",
        "#certfile": f"certfile {pki / 'broker.crt'}",
        "#keyfile": f"keyfile {pki / 'broker.key'}",
        "#use_username_as_clientid": "use_username_as_clientid true",
        "#require_certificate": "require_certificate true",
        "#use_identity_as_username": "use_identity_as_username true",
    }
    broker = store_broker(tmp_path, enable)
    await broker.start()
    try:
        async with gateway(broker.port) as gw:
            await gw.subscribe(UP, qos=1)
            # No user name, no password: the certificate says who this is.
            t1001 = aiomqtt.Client("127.0.0.1", tls_port, tls_context=tls_context(pki, "t1001"))
            async with t1001:
                await t1001.publish(up(1002), press(1002, 0), qos=1)
                await t1001.publish(up(1001), press(1001, 0), qos=1)
            assert await receive_until(gw, press(1001, 0)) == [(up(1001), press(1001, 0))]

        # Without a certificate, a correct password does not get in.
        assert await answer_without_certificate(tls_port, pki, "1001", PASSWORDS["1001"]) == b""
    finally:
        await broker.stop()


# --- gateway.mqtt_credentials -------------------------------------------------------------


def test_terminal_password_is_the_documented_derivation() -> None:
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")  # terminal 1001
    assert terminal_password(key) == "dd324ab43d15a47178bcb485cc544284"  # the documented vector
    for t in EXAMPLE_REGISTRY.terminals.values():
        mac = hmac.new(t.key, b"smiley-mqtt-password-v1", hashlib.sha256).digest()
        assert terminal_password(t.key) == mac[:16].hex()
    with pytest.raises(RegistryError):
        terminal_password(bytes(15))


def test_the_password_file_holds_every_terminal_hashed_by_mosquitto(tmp_path: Path) -> None:
    target = tmp_path / "smiley.passwd"
    assert write_password_file(target, EXAMPLE_REGISTRY, GATEWAY_PASSWORD) == 51
    lines = target.read_text(encoding="ascii").splitlines()
    users = [line.partition(":")[0] for line in lines]
    assert users == [GATEWAY_USER, *(str(i) for i in sorted(EXAMPLE_REGISTRY.terminals))]
    assert all(line.partition(":")[2].startswith("$7$") for line in lines)  # sha512-pbkdf2
    text = target.read_text(encoding="ascii")
    assert GATEWAY_PASSWORD not in text
    assert not any(terminal_password(t.key) in text for t in EXAMPLE_REGISTRY.terminals.values())
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smiley.passwd"]  # no plain text left

    # Regenerated: the file is replaced whole, keeping the mode it was given.
    target.chmod(0o600)
    write_password_file(target, REGISTRY, GATEWAY_PASSWORD)
    assert len(target.read_text(encoding="ascii").splitlines()) == 3
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "password",
    ["short", "has a space in the middle", "has:a:colon:in:the:middle", "tab\tin-it-0123456789"],
)
def test_a_gateway_password_mosquitto_passwd_would_mangle_is_refused(
    tmp_path: Path, password: str
) -> None:
    with pytest.raises(GatewayError, match=GATEWAY_USER):
        write_password_file(tmp_path / "smiley.passwd", REGISTRY, password)
    assert list(tmp_path.iterdir()) == []


def test_password_file_errors_leave_the_old_file_alone(tmp_path: Path) -> None:
    target = tmp_path / "smiley.passwd"
    target.write_text("old\n", encoding="ascii")
    with pytest.raises(GatewayError, match="not found"):
        write_password_file(target, REGISTRY, GATEWAY_PASSWORD, mosquitto_passwd="no-such-tool")
    with pytest.raises(GatewayError, match="failed"):
        write_password_file(target, REGISTRY, GATEWAY_PASSWORD, mosquitto_passwd="false")
    with pytest.raises(GatewayError, match="does not exist"):
        write_password_file(tmp_path / "missing" / "p", REGISTRY, GATEWAY_PASSWORD)
    assert target.read_text(encoding="ascii") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smiley.passwd"]
