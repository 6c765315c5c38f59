"""One terminal's connection to an MQTT broker: the only module that knows aiomqtt and paho.

aiomqtt 2.x has no public way to do three things a terminal needs, so this
module reaches into it (``Client._client``, ``_misc_task``, ``_disconnected``),
and only here:

- acknowledge a message after it is handled (paho's manual ack). The broker then
  has at most ``receive_maximum`` messages unacknowledged (MQTT v5 Receive
  Maximum; on 3.1.1 the broker's own in-flight limit, mosquitto's
  ``max_inflight_messages``, 20 by default), so the bounded incoming queue never
  fills: aiomqtt would drop a message that finds it full. Backpressure, no drops.
- cut the connection without DISCONNECT, as a terminal losing power or coverage
  does: shut the socket down under paho and let paho find the end of the stream.
- wait for the client's keepalive task after the socket closed, so that no task
  outlives the connection.

It also replaces aiomqtt's handler of paho's "register the socket for writing":
aiomqtt defers ``loop.add_writer`` with ``call_soon_threadsafe`` even on the
loop's own thread, so a write queued in the loop iteration in which paho finds
the end of the stream registers a writer on a closed descriptor, or on one that
another connection already reuses (its writer would be replaced). Here the writer
is added at once on the loop's thread, and from paho's connect thread only while
that socket is still paho's.

aiomqtt's errors become ``ConnectFailed`` (no session) or ``ConnectionLost`` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import ssl
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_sim.errors import ConnectFailed, ConnectionLost

T = TypeVar("T")

FAILURE = 0x80
"""SUBACK codes from 0x80 up refuse the subscription (3.1.1 and 5)."""
CLOSE_TIMEOUT = 5.0


class MqttProtocol(enum.Enum):
    """MQTT version a terminal speaks."""

    V311 = "3.1.1"
    V5 = "5"


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message the broker delivered; ``ack`` it once handled."""

    topic: str
    payload: bytes
    mid: int
    qos: int


class MqttConnection:
    """One MQTT connection with a persistent session: connect once, then ``close``.

    Every method raises ``ConnectionLost`` once the connection is gone, at once
    (aiomqtt alone would wait for a PUBACK or SUBACK until its timeout).
    """

    def __init__(
        self,
        *,
        terminal_id: int,
        host: str,
        port: int,
        client_id: str,
        username: str,
        password: str | None,
        protocol: MqttProtocol,
        session_expiry: int,
        keepalive: int,
        receive_maximum: int,
        timeout: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.terminal_id = terminal_id
        self.timeout = timeout
        v5 = protocol is MqttProtocol.V5
        properties: Properties | None = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = session_expiry
            properties.ReceiveMaximum = receive_maximum
        self._client = aiomqtt.Client(
            host,
            port,
            identifier=client_id,
            username=username,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            # Resume the session every time: answers the gateway published while
            # the terminal was away are waiting in it.
            clean_session=None if v5 else False,
            clean_start=False if v5 else MQTT_CLEAN_START_FIRST_ONLY,  # paho: 3.1.1 ignores it
            properties=properties,
            keepalive=keepalive,
            timeout=timeout,
            tls_context=tls,
            max_queued_incoming_messages=receive_maximum,
        )
        self._paho = self._client._client
        self._paho.manual_ack_set(True)
        self._paho.on_socket_register_write = self._register_write
        self._messages = self._client.messages
        self._connected = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    # ------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """CONNECT and wait for CONNACK; ``ConnectFailed`` when there is no session."""
        # paho connects in a worker thread that goes on when we are cancelled: shield
        # the attempt, and close whatever it opened before letting the cancel through.
        attempt = asyncio.ensure_future(self._client.__aenter__())
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            await asyncio.wait((attempt,))
            if not attempt.cancelled() and attempt.exception() is None:
                self._connected = True
            await self.close(graceful=True)
            raise
        except aiomqtt.MqttError as exc:
            await self.close(graceful=False)
            detail = str(exc) or type(exc).__name__
            raise ConnectFailed(detail, terminal_id=self.terminal_id) from exc
        self._connected = True

    def abort(self) -> None:
        """Cut the connection now, without DISCONNECT (the broker sees the stream end).

        Only shuts the socket down: paho closes it from its reader callback, on the
        loop. Closing it here would race aiomqtt, which registers paho's writer with
        ``call_soon_threadsafe``, on a file descriptor that may be reused by then.
        """
        sock = self._paho.socket()
        if not isinstance(sock, socket.socket):  # None: closed already (TLS sockets are ones)
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    async def close(self, *, graceful: bool) -> None:
        """DISCONNECT if ``graceful`` and still connected, else just cut; wait until closed."""
        disconnected = self._client._disconnected
        if graceful and self._connected and not disconnected.done():
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._client.__aexit__(None, None, None)
        self.abort()
        await self._wait_closed()
        # aiomqtt keeps why the connection ended in a future; read it so asyncio
        # does not log "exception was never retrieved".
        disconnected = self._client._disconnected
        if disconnected.done() and not disconnected.cancelled():
            disconnected.exception()

    async def _wait_closed(self) -> None:
        misc = self._client._misc_task
        if misc is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.wait((misc,))
        except TimeoutError:
            misc.cancel()
            await asyncio.wait((misc,))

    def _register_write(self, client: paho.Client, userdata: Any, sock: paho.SocketLike) -> None:
        """paho has bytes to write on ``sock`` (called on the loop, or in the connect thread)."""
        if threading.get_ident() == self._loop_thread:
            self._add_writer(sock)
        else:
            self._loop.call_soon_threadsafe(self._add_writer, sock)

    def _add_writer(self, sock: paho.SocketLike) -> None:
        if self._paho.socket() is sock:
            self._loop.add_writer(sock.fileno(), self._write)

    def _write(self) -> None:
        try:
            self._paho.loop_write()
        except Exception as exc:  # as aiomqtt's own writer: a broken connection
            disconnected = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)

    # ------------------------------------------------------------ messages

    async def subscribe(self, topic: str) -> None:
        """SUBSCRIBE at QoS 1; ``ConnectFailed`` when the broker refuses it."""
        granted = await self._while_connected(self._client.subscribe(topic, qos=1), "SUBSCRIBE")
        codes = [code.value if isinstance(code, ReasonCode) else code for code in granted]
        if any(code >= FAILURE for code in codes):
            raise ConnectFailed(
                f"subscription to {topic} refused (codes {codes})", terminal_id=self.terminal_id
            )

    async def publish(self, topic: str, payload: bytes, *, timeout: float) -> None:  # noqa: ASYNC109
        """PUBLISH at QoS 1, not retained; return once the broker has it (PUBACK).

        No PUBACK within ``timeout`` cuts the connection (``ConnectionLost``).
        """
        operation = self._client.publish(topic, payload, qos=1, retain=False, timeout=timeout)
        try:
            await self._while_connected(operation, "PUBLISH")
        except ConnectionLost:
            self.abort()
            raise

    async def next_message(self) -> Incoming:
        """The next message the broker delivers; ``ConnectionLost`` when the connection ends."""
        try:
            message = await anext(self._messages)
        except aiomqtt.MqttError as exc:
            cause = exc.__cause__
            detail = f"{exc}: {cause}" if cause is not None else str(exc)
            raise ConnectionLost(detail, terminal_id=self.terminal_id) from exc
        return Incoming(str(message.topic), bytes(message.payload), message.mid, message.qos)

    def ack(self, message: Incoming) -> None:
        """PUBACK ``message``: the broker may now send the next one."""
        if message.qos > 0:
            self._paho.ack(message.mid, message.qos)

    async def _while_connected(self, operation: Coroutine[Any, Any, T], what: str) -> T:
        """Await ``operation``, or raise ``ConnectionLost`` as soon as the connection ends."""
        task = asyncio.ensure_future(operation)
        try:
            await asyncio.wait(
                (task, self._client._disconnected), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))
            if not task.cancelled():
                task.exception()  # seen, also when we are cancelled ourselves
        if task.cancelled():
            raise ConnectionLost(f"connection lost during {what}", terminal_id=self.terminal_id)
        try:
            return task.result()
        except aiomqtt.MqttError as exc:
            raise ConnectionLost(f"{what}: {exc}", terminal_id=self.terminal_id) from exc
