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
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.backoff import Backoff
from gateway.registry.config import Config, MqttSection
from gateway.transports.mqtt_flow import FlowCounters
from gateway.transports.mqtt_topics import down_topic, up_subscription

log = structlog.get_logger("gateway.mqtt")

# MQTT v5 section 3.2.2.3.3: a CONNACK that names no Receive Maximum means this.
DEFAULT_RECEIVE_MAXIMUM = 65535
PUBLISH_COMMAND = 0x30  # MQTT fixed header: packet type 3 in the high nibble
# The largest packet the gateway takes, sent as Maximum Packet Size in CONNECT: a
# frame of the protocol is at most 4 KiB, so 64 KiB leaves an oversize or garbled
# frame room to reach the quarantine, and bounds what 200 messages in flight cost.
MAX_PACKET_BYTES = 65_536

Reply = tuple[int, bytes]
"""An answer: the terminal whose down topic it goes to, and the frame's bytes."""


class _Link:
    """The paho callbacks and socket reads of one connection that we take over from aiomqtt.

    ``on_message`` fills the inbox; ``on_connect`` reads the broker's Receive
    Maximum; ``on_publish`` (a broker PUBACK of an answer) frees a slot of the
    answer window. aiomqtt's own connect, publish and socket callbacks still run.

    Flow control of our own: Mosquitto 2.0.11 ignores the Receive Maximum we
    send once we acknowledge (each PUBACK releases a whole window more), so we
    bound what we hold ourselves. The socket reader is ours, not aiomqtt's, and
    paho's ``_sock_recv`` is gated: once ``max_in_flight`` messages are
    received and not acknowledged, a PUBLISH at the head of the stream is not
    read (paho reads packet by packet, straight from the socket, so it stays
    in the kernel's buffer and then at the broker: TCP backpressure) and the
    reader is removed until a PUBACK goes out. Other packets at the head (a
    PINGRESP, the broker's PUBACK of an answer) are still read, where the
    socket lets us peek (not through TLS).

    The answer window cannot free up while we do not read; an answer that
    would wait for it then goes at QoS 0, still before its PUBACK on the same
    connection. Waiting would deadlock against such a broker: its PUBACKs of
    our answers sit behind the PUBLISHes we refuse to read.
    """

    def __init__(
        self,
        inner: paho.Client,
        *,
        max_in_flight: int = DEFAULT_RECEIVE_MAXIMUM,
        flow: FlowCounters | None = None,
        broken: Callable[[Exception], None] | None = None,
    ) -> None:
        self._inner = inner
        self._loop = asyncio.get_running_loop()
        self._inbox: list[paho.MQTTMessage] = []
        self._delivered = asyncio.Event()
        self._window = DEFAULT_RECEIVE_MAXIMUM
        self._answers_out: set[int] = set()  # mids of our QoS 1 answers the broker has not acked
        self._window_changed = asyncio.Event()
        self._max_in_flight = max_in_flight
        self._unacked = 0
        self.flow = flow if flow is not None else FlowCounters()
        self.flow.unacked = 0
        self._broken = broken
        self._sock: Any = None
        self._held = False  # the reader is removed: a PUBLISH waits at the head of the stream
        self._refused = False  # the gate refused a PUBLISH during this read
        reach: Any = inner
        self._recv: Callable[[int], bytes] = reach._sock_recv
        reach._sock_recv = self._gated_recv
        self._aiomqtt_on_connect: Any = inner.on_connect
        self._aiomqtt_on_publish: Any = inner.on_publish
        self._aiomqtt_on_socket_open: Any = inner.on_socket_open
        self._aiomqtt_on_socket_close: Any = inner.on_socket_close
        inner.manual_ack_set(True)
        inner.on_message = self._on_message
        inner.on_connect = self._on_connect
        inner.on_publish = self._on_publish
        inner.on_socket_open = self._on_socket_open
        inner.on_socket_close = self._on_socket_close

    async def batch(self) -> list[paho.MQTTMessage]:
        """Every message delivered since the last batch; waits for one if there is none."""
        await self._delivered.wait()
        self._delivered.clear()
        batch, self._inbox = self._inbox, []
        return batch

    async def answer(self, message: paho.MQTTMessage, reply: Reply | None) -> bool:
        """Publish ``reply``, then PUBACK ``message``; False if the connection is gone.

        Without our PUBACK the broker redelivers the message to the resumed
        session, and the outbox deduplicates it.
        """
        if reply is not None:
            qos = await self._answer_slot()
            terminal_id, payload = reply
            info = self._inner.publish(down_topic(terminal_id), payload, qos=qos)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                return False
            if qos == 1:
                self._answers_out.add(info.mid)
        if self._inner.ack(message.mid, message.qos) != paho.MQTT_ERR_SUCCESS:
            return False
        self._unacked -= 1
        self.flow.unacked = self._unacked
        self.flow.pubacks += 1
        # Hysteresis: reading again at half the bound makes batches, not one message a read.
        if self._held and self._unacked <= self._max_in_flight // 2:
            self._resume()
        return True

    async def _answer_slot(self) -> int:
        """The QoS of the next answer: 1 in the broker's window, 0 if none can free up."""
        while len(self._answers_out) >= self._window:
            if self._held:
                self.flow.answers_qos0 += 1
                return 0
            self._window_changed.clear()
            await self._window_changed.wait()
        return 1

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._unacked += 1
        flow = self.flow
        flow.received += 1
        flow.unacked = self._unacked
        flow.peak_unacked = max(flow.peak_unacked, self._unacked)
        self._inbox.append(message)
        self._delivered.set()

    def _on_connect(self, client: paho.Client, userdata: Any, *args: Any) -> None:
        properties = args[-1]
        limit = getattr(properties, "ReceiveMaximum", DEFAULT_RECEIVE_MAXIMUM)
        # Before any answer of this connection: nothing waits on the window yet.
        self._window = max(1, int(limit))
        if self._aiomqtt_on_connect is not None:
            self._aiomqtt_on_connect(client, userdata, *args)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, *args: Any) -> None:
        if mid in self._answers_out:  # paho reports QoS 0 answers too, once written
            self._answers_out.discard(mid)
            self._window_changed.set()
        if self._aiomqtt_on_publish is not None:
            self._aiomqtt_on_publish(client, userdata, mid, *args)

    # --- reading ------------------------------------------------------------------

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho calls this on aiomqtt's connect thread; aiomqtt schedules its own
        # reader first, ours (scheduled after it) replaces it on the same fd.
        self._aiomqtt_on_socket_open(client, userdata, sock)
        self._loop.call_soon_threadsafe(self._take_reader, sock)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._sock = None
        self._aiomqtt_on_socket_close(client, userdata, sock)

    def _take_reader(self, sock: Any) -> None:
        fileno: int = sock.fileno()
        if self._inner.socket() is not sock:
            return  # closed meanwhile
        self._sock = sock
        self._loop.add_reader(fileno, self._read)

    def _read(self) -> None:
        """What aiomqtt's reader does, but stopping where the gate refuses a PUBLISH."""
        try:
            while True:
                self._refused = False
                rc = self._inner.loop_read()
                if self._refused:
                    self._hold()
                    return
                # TLS: loop_read leaves decoded bytes in the SSL object unread (paho #131).
                pending = getattr(self._sock, "pending", None)
                if rc != paho.MQTT_ERR_SUCCESS or pending is None or pending() == 0:
                    return
        except Exception as exc:  # as aiomqtt's reader: the connection is broken
            if self._broken is not None:
                self._broken(exc)

    def _gated_recv(self, bufsize: int) -> bytes:
        """paho's ``_sock_recv``, refusing to start a PUBLISH while the gateway holds its bound,
        and a packet over MAX_PACKET_BYTES before paho reads (and allocates) its body."""
        packet = self._reach_in_packet()
        starting = packet["command"] == 0
        if packet["have_remaining"] and packet["remaining_length"] > MAX_PACKET_BYTES:
            # MQTT v5 section 3.1.2.11.4: a broker must not send it; one that does
            # loses the connection, as for any protocol error (reconnect with backoff).
            self.flow.packets_too_large += 1
            log.warning("mqtt_packet_too_large", size=packet["remaining_length"],
                        limit=MAX_PACKET_BYTES)  # fmt: skip
            raise ConnectionAbortedError("MQTT packet over Maximum Packet Size")
        if starting and self._unacked >= self._max_in_flight and self._publish_next():
            self._refused = True
            raise BlockingIOError
        return self._recv(bufsize)

    def _reach_in_packet(self) -> dict[str, Any]:
        reach: Any = self._inner
        packet: dict[str, Any] = reach._in_packet  # paho's packet being read; command 0: none
        return packet

    def _publish_next(self) -> bool:
        """Whether the next packet may be a PUBLISH (True where we cannot peek)."""
        sock = self._sock
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
            return True
        head = sock.recv(1, socket.MSG_PEEK)  # BlockingIOError: nothing yet, as paho expects
        return not head or head[0] & 0xF0 == PUBLISH_COMMAND

    def _hold(self) -> None:
        self._held = True
        self.flow.holds += 1
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._window_changed.set()  # a waiting answer cannot get a slot now: QoS 0

    def _resume(self) -> None:
        self._held = False
        sock = self._sock
        if sock is None:
            return
        fileno: int = sock.fileno()
        if self._inner.socket() is not sock:
            return  # closed: a new connection brings a new link
        self._loop.add_reader(fileno, self._read)
        self._loop.call_soon(self._read)  # TLS may hold decoded bytes the fd does not show


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
        self.flow = FlowCounters()

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
        # Before connecting: a resumed session delivers at once.
        link = _Link(
            _paho(client),
            max_in_flight=self._section.max_in_flight,
            flow=self.flow,
            broken=lambda exc: _broken(client, exc),
        )
        async with client:
            self.connects += 1
            await client.subscribe(up_subscription(self._section.shared_group), qos=1)
            self._backoff.reset()
            self.connected.set()
            s = self._section
            log.info("mqtt_connected", url=s.url, client_id=s.client_id, group=s.shared_group)
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
        properties.MaximumPacketSize = MAX_PACKET_BYTES
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


def _broken(client: aiomqtt.Client, exc: Exception) -> None:
    """End the connection as aiomqtt's own reader does when paho's read raises."""
    disconnected: asyncio.Future[None] = client._disconnected
    if not disconnected.done():
        disconnected.set_exception(exc)


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client under aiomqtt: where we reach past aiomqtt's API (with :class:`_Link`).

    aiomqtt (2.x) has no manual acknowledgement and no way to take messages
    but one at a time; paho's callbacks are what the project pins it for (see
    the module docstring). tests/test_mqtt.py checks it holds.
    """
    inner: Any = client._client
    assert isinstance(inner, paho.Client)
    return inner
