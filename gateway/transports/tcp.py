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
from protocols.constants import FrameType, NakCode
from protocols.errors import DecodeError
from protocols.frames import Ack, Frame, Heartbeat, Hello, Nak, Presses, Welcome, encode
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
        log.info("tcp_listening", listen=self._section.listen, tls=self._ssl is not None)

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
        self._terminal_id: int | None = None
        self._log = log.bind(peer=peer, transport=TRANSPORT)
        self._reading: asyncio.Task[str] | None = None
        self._stopping = False

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
        reason = "closed"
        try:
            reason = await self._reading
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._stopping or (current is not None and current.cancelling()):
                raise  # serve() itself was cancelled, not just the reading
            reason = "shutdown"
        finally:
            if not writer_task.done():
                # Blocks while the queue is full; the writer keeps emptying it.
                await self._answers.put(None)
            try:
                await writer_task
            finally:
                self._writer.transport.abort()
                self._log.info("tcp_disconnected", reason=reason)

    async def _read_frames(self) -> str:
        self._log.debug("tcp_connected")
        while True:
            try:
                data = await asyncio.wait_for(
                    self._reader.read(READ_CHUNK), self._section.idle_timeout_s
                )
            except TimeoutError:
                return "idle"
            except (ConnectionError, OSError):
                return "reset"
            if not data:
                return "eof"
            origin = Origin(TRANSPORT, self._peer, self._clock())
            for event in self._stream.feed(data):
                answer = self._answer(event, origin)
                await self._answers.put(answer)
                if answer.close:
                    return "protocol_error"

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
        if isinstance(event, DecodeError):
            return self._refuse(event, origin)
        if self._terminal_id is None and not isinstance(event, Hello):
            error = DecodeError(
                "first frame was not HELLO",
                raw=self._encode(event),
                terminal_id=event.terminal_id,
            )
            return self._refuse(
                error, origin, code=NakCode.NOT_HELLO, close=True, ref_seq=_first_seq(event)
            )
        match event:
            case Hello():
                return self._welcome(event, origin)
            case Presses():
                return _Answer(asyncio.ensure_future(self._commit(event, origin)))
            case Heartbeat():
                self._ingest.heartbeat(event, origin)
                ack = Ack(event.terminal_id, FrameType.HEARTBEAT, 0, int(origin.received_at))
                return _Answer(_ready(self._encode(ack)))
            case _:
                error = DecodeError(
                    f"{type(event).__name__} is not accepted from a terminal over TCP",
                    terminal_id=event.terminal_id,
                )
                return self._refuse(error, origin, code=NakCode.UNSUPPORTED, close=True)

    def _welcome(self, hello: Hello, origin: Origin) -> _Answer:
        if self._terminal_id is None:
            self._log = self._log.bind(terminal_id=hello.terminal_id)
        self._terminal_id = hello.terminal_id
        self._ingest.hello(hello, origin)
        next_seq = self._ingest.next_seq(hello.terminal_id)
        self._log.info(
            "tcp_hello",
            fw_version=hello.fw_version,
            boot_count=hello.boot_count,
            clock_unsynced=hello.clock_unsynced,
            clock_offset_s=hello.clock - int(origin.received_at),
            queued=hello.queued,
            next_seq=next_seq,
        )
        welcome = Welcome(hello.terminal_id, int(self._clock()), next_seq)
        return _Answer(_ready(self._encode(welcome)))

    async def _commit(self, frame: Presses, origin: Origin) -> bytes:
        try:
            await self._ingest.presses(frame, origin)
        except OutboxBusy as exc:
            self._log.warning("presses_busy", first_seq=frame.first_seq, error=str(exc))
            self._ingest.nak_sent(NakCode.BUSY)
            return self._encode(Nak(frame.terminal_id, NakCode.BUSY, frame.first_seq))
        ack = Ack(frame.terminal_id, FrameType.PRESSES, frame.last_seq, int(self._clock()))
        return self._encode(ack)

    def _refuse(
        self,
        error: DecodeError,
        origin: Origin,
        *,
        code: NakCode | None = None,
        close: bool | None = None,
        ref_seq: int | None = None,
    ) -> _Answer:
        code = code if code is not None else error.nak_code
        close = error.closes if close is None else close
        terminal_id = error.terminal_id if self._terminal_id is None else self._terminal_id
        if code is NakCode.UNKNOWN_TERMINAL or terminal_id is None:
            terminal_id = error.terminal_id
        self._log.warning(
            "frame_refused",
            reason=code.name if code is not None else error.name,
            detail=error.reason,
            frame_terminal_id=error.terminal_id,
            closes=close,
        )
        nak = None
        if code is not None and terminal_id is not None:
            ref = error.ref_seq if ref_seq is None else ref_seq
            nak = self._encode(Nak(terminal_id, code, ref))
            self._ingest.nak_sent(code)
        return _Answer(asyncio.ensure_future(self._quarantine(error, origin, code, nak)), close)

    async def _quarantine(
        self, error: DecodeError, origin: Origin, code: NakCode | None, nak: bytes | None
    ) -> bytes | None:
        try:
            await self._ingest.refused(error, origin, reason=code.name if code else None)
        except OutboxBusy as exc:
            self._log.error("quarantine_failed", error=str(exc), reason=error.name)
        return nak

    def _encode(self, frame: Frame) -> bytes:
        if isinstance(frame, Nak) and frame.code is NakCode.UNKNOWN_TERMINAL:
            return encode(frame, None)
        key = self._registry.key_for(frame.terminal_id)
        if key is None:
            # A NAK about a frame whose terminal id is not registered (a corrupt header).
            return encode(Nak(frame.terminal_id, NakCode.UNKNOWN_TERMINAL, 0), None)
        return encode(frame, key)


def _first_seq(frame: Frame) -> int:
    return frame.first_seq if isinstance(frame, Presses) else 0


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
