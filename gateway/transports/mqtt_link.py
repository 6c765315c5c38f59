"""The MQTT connection under :class:`~gateway.transports.mqtt.MqttIngest`: aiomqtt and paho.

This module owns the client (persistent session, Receive Maximum, TLS), the
reconnect loop and the paho callbacks we take over from aiomqtt
(:class:`_Link`); what a message means, and what answers it, is decided in
gateway/transports/mqtt.py, which subclasses :class:`MqttConnection` and
supplies :meth:`MqttConnection._handle`.

PUBACK only after commit: aiomqtt acknowledges a QoS 1 message as soon as
paho has queued it in memory, so a crash would lose it. Underneath aiomqtt we
switch paho to manual acknowledgement and send each PUBACK once the frame is
committed (or refused and quarantined).

Batches: we take paho's ``on_message`` from aiomqtt (whose queue and
iterator cost a task and several futures per message) and hand on together
the messages that one read of the socket brought.

Answers before PUBACKs: paho must never hold a publish back, so its own
in-flight limit is off and :class:`_Link` keeps at most the broker's Receive
Maximum of answers unacknowledged instead.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.backoff import Backoff
from gateway.registry.config import Config, MqttSection

log = structlog.get_logger("gateway.mqtt")

UP_TOPICS = "smiley/v1/+/up"
# MQTT v5 section 3.2.2.3.3: a CONNACK that names no Receive Maximum means this.
DEFAULT_RECEIVE_MAXIMUM = 65535

Reply = tuple[int, bytes]
"""An answer: the terminal whose down topic it goes to, and the frame's bytes."""


def down_topic(terminal_id: int) -> str:
    return f"smiley/v1/{terminal_id}/down"


class _Link:
    """The paho callbacks of one connection that we take over from aiomqtt, in one place.

    ``on_message`` fills the inbox; ``on_connect`` reads the broker's Receive
    Maximum; ``on_publish`` (a broker PUBACK of an answer) frees a slot of the
    answer window. aiomqtt's own connect and publish callbacks still run.
    """

    def __init__(self, inner: paho.Client) -> None:
        self._inner = inner
        self._inbox: list[paho.MQTTMessage] = []
        self._delivered = asyncio.Event()
        self._answers = asyncio.Semaphore(DEFAULT_RECEIVE_MAXIMUM)
        self._aiomqtt_on_connect: Any = inner.on_connect
        self._aiomqtt_on_publish: Any = inner.on_publish
        inner.manual_ack_set(True)
        inner.on_message = self._on_message
        inner.on_connect = self._on_connect
        inner.on_publish = self._on_publish

    async def batch(self) -> list[paho.MQTTMessage]:
        """Every message delivered since the last batch; waits for one if there is none."""
        await self._delivered.wait()
        self._delivered.clear()
        batch, self._inbox = self._inbox, []
        return batch

    async def answer(self, message: paho.MQTTMessage, reply: Reply | None) -> bool:
        """Publish ``reply`` (QoS 1), then PUBACK ``message``; False if the connection is gone.

        Without our PUBACK the broker redelivers the message to the resumed
        session, and the outbox deduplicates it.
        """
        if reply is not None:
            await self._answers.acquire()
            terminal_id, payload = reply
            info = self._inner.publish(down_topic(terminal_id), payload, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                self._answers.release()
                return False
        return self._inner.ack(message.mid, message.qos) == paho.MQTT_ERR_SUCCESS

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._inbox.append(message)
        self._delivered.set()

    def _on_connect(self, client: paho.Client, userdata: Any, *args: Any) -> None:
        properties = args[-1]
        limit = getattr(properties, "ReceiveMaximum", DEFAULT_RECEIVE_MAXIMUM)
        # Before any answer of this connection: nothing waits on the window yet.
        self._answers = asyncio.Semaphore(max(1, int(limit)))
        if self._aiomqtt_on_connect is not None:
            self._aiomqtt_on_connect(client, userdata, *args)

    def _on_publish(self, client: paho.Client, userdata: Any, *args: Any) -> None:
        self._answers.release()
        if self._aiomqtt_on_publish is not None:
            self._aiomqtt_on_publish(client, userdata, *args)


class MqttConnection:
    """Connects to the broker and hands each batch to :meth:`_handle`; reconnects while it runs."""

    def __init__(self, config: Config) -> None:
        assert config.mqtt is not None
        self._config = config
        self._section: MqttSection = config.mqtt
        self._backoff = Backoff(initial=0.5, cap=self._section.reconnect_max_s)
        self.connected = asyncio.Event()
        self.messages = 0
        self.connects = 0

    async def _handle(self, link: _Link, batch: Sequence[paho.MQTTMessage]) -> None:
        """Answer and PUBACK every message of ``batch`` through ``link``: the subclass's part."""
        raise NotImplementedError

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                self.connected.clear()
                delay = self._backoff.next_delay()
                error = "; ".join(str(e) for e in group.exceptions)
                log.warning("mqtt_disconnected", error=error, retry_in_s=round(delay, 2))
            # aiomqtt's __aexit__ can replace our cancellation with the MqttError of
            # its disconnect; without this check the loop would reconnect forever.
            if _being_cancelled():
                raise asyncio.CancelledError
            # Outside the except* block: awaiting inside one is not allowed.
            if not self.connected.is_set():
                await asyncio.sleep(self._backoff.current)

    async def _session(self) -> None:
        client = self._client()
        link = _Link(_paho(client))  # before connecting: a resumed session delivers at once
        async with client:
            self.connects += 1
            await client.subscribe(UP_TOPICS, qos=1)
            self._backoff.reset()
            self.connected.set()
            log.info("mqtt_connected", url=self._section.url, client_id=self._section.client_id)
            async with asyncio.TaskGroup() as handlers:
                handlers.create_task(_until_disconnected(client))
                while True:
                    batch = await link.batch()
                    self.messages += len(batch)
                    handlers.create_task(self._handle(link, batch))

    def _client(self) -> aiomqtt.Client:
        s = self._section
        host, port = s.host_port()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = s.session_expiry_s
        properties.ReceiveMaximum = s.max_in_flight
        return aiomqtt.Client(
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
            # No limit in paho: a publish it held back would follow our PUBACK;
            # _Link bounds the answers by the broker's Receive Maximum instead.
            max_inflight_messages=0,
        )

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


def _being_cancelled() -> bool:
    """Whether this task has been asked to stop, even if the CancelledError was swallowed."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _until_disconnected(client: aiomqtt.Client) -> None:
    """Raise aiomqtt's MqttError once the connection is lost.

    Messages reach _Link, never aiomqtt's queue; its iterator is how aiomqtt
    tells that the connection ended.
    """
    async for _ in client.messages:
        pass


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client under aiomqtt: where we reach past aiomqtt's API (with :class:`_Link`).

    aiomqtt (2.x) has no manual acknowledgement and no way to take messages
    but one at a time; paho's callbacks are what the project pins it for (see
    the module docstring). tests/test_mqtt.py checks it holds.
    """
    inner: Any = client._client
    assert isinstance(inner, paho.Client)
    return inner
