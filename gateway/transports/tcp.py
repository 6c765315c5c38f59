"""TCP transport: the spec's section 4 (TCP) over asyncio streams, optionally TLS.

Each connection has a reader that decodes frames and queues one answer per
frame, and a writer that sends the answers in arrival order, each once it is
ready (an ACK for PRESSES is ready once the records are committed). The answer
queue is bounded: when a terminal pipelines more than ``pipeline_depth``
frames, or stops reading its answers, the reader stops reading its socket.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gateway.errors import OutboxBusy
from gateway.intake.ingest import Ingest, Origin
from gateway.registry.config import TcpSection, parse_listen
from gateway.registry.terminals import Registry
from gateway.transports.tcp_proxy import read_proxy_header
from protocols.constants import NakCode
from protocols.errors import DecodeError, PeerError
from protocols.frames import Frame, Heartbeat, Hello, Presses
from protocols.proxy_protocol import BadProxyHeader
from protocols.session import (
    CloseReason,
    GatewaySession,
    GatewayState,
    Refuse,
    Transport,
    ack_for,
    busy_for,
    welcome_for,
)
from protocols.stream import FrameStream

log = structlog.get_logger("gateway.tcp")

READ_CHUNK = 16384
TRANSPORT = "tcp"
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Answer:
    """What to send for one frame (None: nothing), and whether to close after it."""

    reply: Awaitable[bytes | None]
    close: bool = False


def _ready(data: bytes | None) -> Awaitable[bytes | None]:
    future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
    future.set_result(data)
    return future


class TcpServer:
    """Accepts terminal connections and serves each with a :class:`TerminalConnection`."""

    def __init__(
        self,
        section: TcpSection,
        ingest: Ingest,
        registry: Registry,
        *,
        clock: Clock,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._section = section
        self._ingest = ingest
        self._registry = registry
        self._clock = clock
        self._ssl = ssl_context
        self._connections: dict[asyncio.Task[None], TerminalConnection] = {}
        self._server: asyncio.Server | None = None
        self.accepted = 0
        self.refused_connections = 0

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def listening(self) -> bool:
        """Whether the listening socket is open (readiness)."""
        return self._server is not None and self._server.is_serving()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        host, port = parse_listen("tcp.listen", self._section.listen)
        self._server = await asyncio.start_server(
            self._accept, host, port, ssl=self._ssl, limit=READ_CHUNK, backlog=1024
        )
        log.info(
            "tcp_listening",
            listen=self._section.listen,
            tls=self._ssl is not None,
            proxy_protocol=self._section.proxy_protocol,
        )

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def close_connections(self, grace_s: float) -> None:
        """Stop reading everywhere, give answers in flight ``grace_s`` to go out, then cut."""
        for connection in list(self._connections.values()):
            connection.stop_reading()
        tasks = list(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                late_one = self._connections.get(task)
                if late_one is not None:
                    # A peer blocked writing to us reads no answer: its unsent ACKs are
                    # lost (it resends, the outbox ignores the repeats), and the writer,
                    # its drain failing, finishes instead of waiting for the idle timeout.
                    late_one.abort()
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = _peer_name(writer)
        if len(self._connections) >= self._section.max_connections:
            self.refused_connections += 1
            log.warning("tcp_connection_refused", peer=peer, reason="max_connections")
            writer.transport.abort()
            return
        self.accepted += 1
        connection = TerminalConnection(
            reader,
            writer,
            peer,
            section=self._section,
            ingest=self._ingest,
            registry=self._registry,
            clock=self._clock,
        )
        self._connections[task] = connection
        try:
            await connection.serve()
        finally:
            del self._connections[task]


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class TerminalConnection:
    """One terminal's TCP session, from HELLO to close."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        *,
        section: TcpSection,
        ingest: Ingest,
        registry: Registry,
        clock: Clock,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self._section = section
        self._ingest = ingest
        self._registry = registry
        self._clock = clock
        self._stream = FrameStream(registry.key_for)
        self._answers: asyncio.Queue[_Answer | None] = asyncio.Queue(section.pipeline_depth)
        self._session = GatewaySession(Transport.TCP, registry.key_for)
        self._greeted = False
        self._log = log.bind(peer=peer, transport=TRANSPORT)
        self._reading: asyncio.Task[CloseReason] | None = None
        self._stopping = False
        self._quiet = False

    def abort(self) -> None:
        """Cut the connection at once; answers not yet written are not sent."""
        self._writer.transport.abort()

    def stop_reading(self) -> None:
        """Take no more frames; the answers already queued still go out."""
        self._stopping = True
        if self._reading is not None:
            self._reading.cancel()

    async def serve(self) -> None:
        writer_task = asyncio.create_task(self._write_answers())
        self._reading = asyncio.create_task(self._read_frames())
        reason = CloseReason.CLOSED
        try:
            reason = await self._reading
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._stopping or (current is not None and current.cancelling()):
                raise  # serve() itself was cancelled, not just the reading
            reason = CloseReason.SHUTDOWN
            await self._refuse_truncated()
        finally:
            if not writer_task.done():
                # Blocks while the queue is full; the writer keeps emptying it.
                await self._answers.put(None)
            try:
                await writer_task
            finally:
                self._writer.transport.abort()
                if not self._quiet:
                    self._log.info("tcp_disconnected", reason=reason.value)

    async def _read_frames(self) -> CloseReason:
        self._log.debug("tcp_connected")
        if self._section.proxy_protocol:
            first = await self._proxied()
            if isinstance(first, CloseReason):
                return first
            if first and await self._take(first):
                return CloseReason.PROTOCOL_ERROR
        while True:
            try:
                data = await asyncio.wait_for(
                    self._reader.read(READ_CHUNK), self._section.idle_timeout_s
                )
            except TimeoutError:
                reason = CloseReason.IDLE
            except (ConnectionError, OSError):
                reason = CloseReason.RESET
            else:
                if data:
                    if await self._take(data):
                        return CloseReason.PROTOCOL_ERROR
                    continue
                reason = CloseReason.EOF
            await self._refuse_truncated()
            return reason

    async def _proxied(self) -> CloseReason | bytes:
        """Read the balancer's PROXY header: the terminal's address becomes the peer.

        What follows the header is returned, the terminal's first bytes. A v2
        LOCAL connection (a health check) is closed quietly; no header is refused.
        """
        try:
            relayed = await read_proxy_header(self._reader)
        except BadProxyHeader as error:
            self._log.warning("proxy_header_refused", detail=error.reason, received=len(error.raw))
            await self._quarantine(error, Origin(TRANSPORT, self._peer, self._clock()), None)
            return CloseReason.PROTOCOL_ERROR
        except (ConnectionError, OSError):
            return CloseReason.RESET
        if relayed is None or relayed.header.local:
            self._quiet = True  # a port probe or a health check: no line at close
            if relayed is not None:
                self._log.debug("proxy_health_check", version=relayed.header.version)
            return CloseReason.EOF
        balancer, self._peer = self._peer, relayed.peer(self._peer)
        self._log = log.bind(peer=self._peer, transport=TRANSPORT, via=balancer)
        return relayed.rest

    async def _take(self, data: bytes) -> bool:
        """Answer every frame ``data`` completes; True once an answer closes the connection."""
        origin = Origin(TRANSPORT, self._peer, self._clock())
        for event in self._stream.feed(data):
            answer = self._answer(event, origin)
            await self._answers.put(answer)
            if answer.close:
                return True
        return False

    async def _write_answers(self) -> None:
        writing = True
        while (answer := await self._answers.get()) is not None:
            reply = await answer.reply
            if writing and reply is not None:
                try:
                    self._writer.write(reply)
                    await asyncio.wait_for(self._writer.drain(), self._section.idle_timeout_s)
                except (ConnectionError, OSError, TimeoutError):
                    writing = False
                    self._writer.transport.abort()
            if answer.close:
                writing = False
                self._writer.transport.abort()

    # ------------------------------------------------------------ per event

    def _answer(self, event: Frame | DecodeError, origin: Origin) -> _Answer:
        decision = self._session.receive(event)
        if isinstance(decision, Refuse):
            return self._refuse(decision, origin)
        match decision.frame:
            case Hello() as hello:
                return self._welcome(hello, origin)
            case Presses() as presses:
                return _Answer(asyncio.ensure_future(self._commit(presses, origin)))
            case Heartbeat() as heartbeat:
                self._ingest.heartbeat(heartbeat, origin)
                ack = ack_for(heartbeat, int(origin.received_at))
                return _Answer(_ready(self._session.encode(ack)))

    def _welcome(self, hello: Hello, origin: Origin) -> _Answer:
        if not self._greeted:
            self._log = self._log.bind(terminal_id=hello.terminal_id)
            self._greeted = True
        self._ingest.hello(hello, origin)
        return _Answer(asyncio.ensure_future(self._welcome_reply(hello, origin)))

    async def _welcome_reply(self, hello: Hello, origin: Origin) -> bytes:
        next_seq = await self._ingest.welcome_seq(hello.terminal_id)
        self._log.info(
            "tcp_hello",
            fw_version=hello.fw_version,
            boot_count=hello.boot_count,
            clock_unsynced=hello.clock_unsynced,
            clock_offset_s=hello.clock - int(origin.received_at),
            queued=hello.queued,
            next_seq=next_seq,
        )
        return self._session.encode(welcome_for(hello, int(self._clock()), next_seq))

    async def _commit(self, frame: Presses, origin: Origin) -> bytes:
        try:
            await self._ingest.presses(frame, origin)
        except OutboxBusy as exc:
            self._log.warning("presses_busy", first_seq=frame.first_seq, error=str(exc))
            self._ingest.nak_sent(NakCode.BUSY)
            return self._session.encode(busy_for(frame))
        return self._session.encode(ack_for(frame, int(self._clock())))

    def _refuse(self, decision: Refuse, origin: Origin) -> _Answer:
        error = decision.error
        self._log.warning(
            "frame_refused",
            reason=decision.reason,
            detail=error.reason,
            frame_terminal_id=error.terminal_id,
            closes=decision.close,
        )
        nak = None
        if decision.nak is not None:
            nak = self._session.encode(decision.nak)
            self._ingest.nak_sent(decision.nak.code)
        quarantined = asyncio.ensure_future(self._quarantine(error, origin, nak))
        return _Answer(quarantined, decision.close)

    async def _refuse_truncated(self) -> None:
        """Keep what is left of a frame the connection's close cut short (TRUNCATED)."""
        truncated = self._stream.end()
        # A session closed by a refusal has read its last frame; the rest was never read.
        if truncated is not None and self._session.state is not GatewayState.CLOSED:
            origin = Origin(TRANSPORT, self._peer, self._clock())
            await self._answers.put(self._answer(truncated, origin))

    async def _quarantine(
        self, error: PeerError, origin: Origin, nak: bytes | None
    ) -> bytes | None:
        try:
            await self._ingest.refused(error, origin)
        except OutboxBusy as exc:
            self._log.error("quarantine_failed", error=str(exc), reason=error.name)
        return nak


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
