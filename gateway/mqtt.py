"""MQTT transport: the spec's section 4 (MQTT) through a broker, with aiomqtt.

The gateway keeps a persistent session (fixed client id, no clean start, a
session expiry), subscribes ``smiley/v1/+/up`` at QoS 1 and answers on
``smiley/v1/{terminal_id}/down`` at QoS 1.

PUBACK only after commit: aiomqtt acknowledges a QoS 1 message as soon as
paho has queued it in memory, so a crash would lose it. Underneath aiomqtt we
switch paho to manual acknowledgement and send each PUBACK once the frame is
committed (or refused and quarantined). A message whose PUBACK was never sent
is redelivered by the broker when the session resumes.

Backpressure: the MQTT v5 Receive Maximum tells the broker how many QoS 1
messages may be unacknowledged at once (``max_in_flight``). A message waiting
for a commit holds its slot, so while the outbox is slow or refusing, the
broker stops sending and keeps the rest; nothing is buffered without bound.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.backoff import Backoff
from gateway.config import Config, MqttSection
from gateway.errors import OutboxBusy
from gateway.ingest import Ingest, Origin
from gateway.registry import Registry
from protocols.constants import FrameType, NakCode
from protocols.errors import DecodeError
from protocols.frames import Ack, Frame, Heartbeat, Nak, Presses, decode, encode

log = structlog.get_logger("gateway.mqtt")

TRANSPORT = "mqtt"
UP_TOPICS = "smiley/v1/+/up"
Clock = Callable[[], float]


def down_topic(terminal_id: int) -> str:
    return f"smiley/v1/{terminal_id}/down"


def topic_terminal(topic: str) -> int | None:
    """The decimal terminal id of ``smiley/v1/{id}/up``, or None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[:2] != ["smiley", "v1"] or parts[3] != "up":
        return None
    text = parts[2]
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    value = int(text)
    return value if value <= 0xFFFFFFFF else None


class _Refusal(Exception):
    """A message the gateway does not count; it is quarantined and acknowledged."""

    def __init__(self, error: DecodeError, nak: NakCode | None, reason: str | None = None) -> None:
        super().__init__(error.reason)
        self.error = error
        self.nak = nak
        self.reason = reason


class MqttIngest:
    """Takes terminal frames from the broker; reconnects for as long as it runs."""

    def __init__(
        self,
        config: Config,
        ingest: Ingest,
        registry: Registry,
        *,
        clock: Clock,
    ) -> None:
        assert config.mqtt is not None
        self._config = config
        self._section: MqttSection = config.mqtt
        self._ingest = ingest
        self._registry = registry
        self._clock = clock
        self._backoff = Backoff(initial=0.5, cap=self._section.reconnect_max_s)
        self._commit_backoff_cap = 5.0
        self.connected = asyncio.Event()
        self.messages = 0
        self.connects = 0

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                self.connected.clear()
                delay = self._backoff.next_delay()
                error = "; ".join(str(e) for e in group.exceptions)
                log.warning("mqtt_disconnected", error=error, retry_in_s=round(delay, 2))
            # Outside the except* block: awaiting inside one is not allowed.
            if not self.connected.is_set():
                await asyncio.sleep(self._backoff.current)

    async def _session(self) -> None:
        client = self._client()
        async with client:
            self.connects += 1
            await client.subscribe(UP_TOPICS, qos=1)
            self._backoff.reset()
            self.connected.set()
            log.info("mqtt_connected", url=self._section.url, client_id=self._section.client_id)
            async with asyncio.TaskGroup() as handlers:
                async for message in client.messages:
                    self.messages += 1
                    handlers.create_task(self._handle(client, message))

    def _client(self) -> aiomqtt.Client:
        s = self._section
        host, port = s.host_port()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = s.session_expiry_s
        properties.ReceiveMaximum = s.max_in_flight
        client = aiomqtt.Client(
            host,
            port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            keepalive=s.keepalive_s,
            properties=properties,
            tls_context=self._tls_context(),
            # The broker bounds what is in flight (Receive Maximum); a bounded queue
            # here would make aiomqtt discard messages, never to be redelivered.
            max_queued_incoming_messages=0,
        )
        _paho(client).manual_ack_set(True)
        return client

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self._section
        if not s.tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self._config.path(s.ca_file)) if s.ca_file else None
        )
        if s.cert_file is not None and s.key_file is not None:
            context.load_cert_chain(self._config.path(s.cert_file), self._config.path(s.key_file))
        return context

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        origin = Origin(TRANSPORT, topic, self._clock())
        try:
            answer = await self._answer(bytes(payload), topic, origin)
        except _Refusal as refusal:
            answer = await self._refuse(refusal, origin)
        try:
            if answer is not None:
                terminal_id, reply = answer
                await client.publish(down_topic(terminal_id), reply, qos=1)
            # Only now is the frame committed (or kept in quarantine): acknowledge it.
            _paho(client).ack(message.mid, message.qos)
        except aiomqtt.MqttError:
            # The connection is gone; without our PUBACK the broker redelivers the
            # message to the resumed session, and the outbox deduplicates it.
            return

    async def _answer(self, payload: bytes, topic: str, origin: Origin) -> tuple[int, bytes] | None:
        topic_id = topic_terminal(topic)
        try:
            frame = decode(payload, self._registry.key_for)
        except DecodeError as error:
            tied = error.terminal_id is not None and error.terminal_id == topic_id
            known = tied and self._registry.key_for(topic_id or 0) is not None
            nak = (
                error.nak_code if known and error.nak_code is not NakCode.UNKNOWN_TERMINAL else None
            )
            raise _Refusal(error, nak) from None
        if topic_id != frame.terminal_id:
            mismatch = DecodeError(
                f"topic {topic!r} does not name terminal {frame.terminal_id}",
                raw=payload,
                terminal_id=frame.terminal_id,
            )
            raise _Refusal(mismatch, None, reason="TOPIC_MISMATCH")
        match frame:
            case Presses():
                await self._commit(frame, origin)
                ack = Ack(frame.terminal_id, FrameType.PRESSES, frame.last_seq, int(self._clock()))
                return frame.terminal_id, self._encode(ack)
            case Heartbeat():
                self._ingest.heartbeat(frame, origin)
                ack = Ack(frame.terminal_id, FrameType.HEARTBEAT, 0, int(self._clock()))
                return frame.terminal_id, self._encode(ack)
            case _:
                unsupported = DecodeError(
                    f"{type(frame).__name__} is not accepted from a terminal over MQTT",
                    raw=payload,
                    terminal_id=frame.terminal_id,
                )
                raise _Refusal(unsupported, NakCode.UNSUPPORTED, reason="UNSUPPORTED")

    def _nak_for(self, error: DecodeError, topic_id: int | None) -> NakCode | None:
        """Answer only frames tied to a known terminal: its id in the header and the topic."""
        if error.terminal_id is None or error.terminal_id != topic_id:
            return None
        if self._registry.key_for(topic_id) is None:
            return None
        return error.nak_code

    async def _commit(self, frame: Presses, origin: Origin) -> None:
        """Commit, retrying while the outbox refuses; the message keeps its slot meanwhile."""
        backoff: Backoff | None = None  # made on the first refusal only: this is per message
        while True:
            try:
                await self._ingest.presses(frame, origin)
            except OutboxBusy as exc:
                if backoff is None:
                    log.warning("presses_busy", terminal_id=frame.terminal_id, error=str(exc))
                    backoff = Backoff(initial=0.2, cap=self._commit_backoff_cap)
                await asyncio.sleep(backoff.next_delay())
                continue
            return

    async def _refuse(self, refusal: _Refusal, origin: Origin) -> tuple[int, bytes] | None:
        error = refusal.error
        log.warning(
            "frame_refused",
            transport=TRANSPORT,
            topic=origin.peer,
            reason=refusal.reason or error.name,
            detail=error.reason,
            terminal_id=error.terminal_id,
        )
        backoff: Backoff | None = None
        while True:
            try:
                await self._ingest.refused(error, origin, reason=refusal.reason)
                break
            except OutboxBusy:
                backoff = backoff or Backoff(initial=0.2, cap=self._commit_backoff_cap)
                await asyncio.sleep(backoff.next_delay())
        if refusal.nak is None or error.terminal_id is None:
            return None
        nak = Nak(error.terminal_id, refusal.nak, error.ref_seq)
        self._ingest.nak_sent(refusal.nak)
        return error.terminal_id, self._encode(nak)

    def _encode(self, frame: Frame) -> bytes:
        return encode(frame, self._registry.key_for(frame.terminal_id))


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client under aiomqtt: the one place we reach past aiomqtt's API.

    aiomqtt (2.x) has no manual acknowledgement; paho's is what the project
    pins it for (see the module docstring). tests/test_mqtt.py checks it holds.
    """
    inner: Any = client._client
    assert isinstance(inner, paho.Client)
    return inner
