"""One terminal's TCP link to the gateway, as the firmware runs it (spec sections 4 and 5).

Per connection::

    terminal                          gateway
      HELLO (flags, queued)  ------->
                             <-------  WELCOME (gateway_time, next_seq)   set clock
      PRESSES / HEARTBEAT    ------->  up to ``window`` frames unanswered
                             <-------  ACK or NAK, one per frame, in order (FIFO)

Records leave ``Terminal.pending`` only when an ACK names the last seq of their
frame. Everything else (NAK BUSY, NAK BAD_CRC, a lost connection, a power loss)
keeps them, and every new session sends every pending record again from the
lowest: WELCOME.next_seq is not taken as "all below is committed" (there can be
gaps). NAK MALFORMED is a firmware bug: it is reported, and the records wait for
the next session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Unpack

from firmware_sim.backoff import Backoff
from firmware_sim.errors import (
    AnswerTimeout,
    ConnectFailed,
    ConnectionLost,
    GatewayProtocolError,
    Refused,
    SessionEnded,
)
from firmware_sim.faults import Fault
from firmware_sim.link import MAX_QUEUED_FIELD, Link, LinkParts, SessionOptions
from firmware_sim.terminal import MAX_SEQ, MadePress, Terminal
from protocols import constants as c
from protocols.constants import FrameType
from protocols.errors import GatewayViolation
from protocols.frames import Frame, Hello, Welcome, frame_type
from protocols.session import Transport
from protocols.stream import Event, FrameStream
from protocols.terminal_session import (
    Acked,
    NakAction,
    Naked,
    Sent,
    TerminalEvent,
    TerminalSession,
    Welcomed,
)

READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class LinkOptions(SessionOptions):
    """How every terminal of a fleet talks TCP to one gateway."""

    host: str
    port: int
    ssl: ssl.SSLContext | None = None
    server_hostname: str | None = None
    fw_version: int = 0x0100


class TerminalLink(Link[LinkOptions]):
    """Keeps one terminal connected: reconnects with backoff until cancelled or stopped."""

    transport = "tcp"

    def __init__(
        self, terminal: Terminal, options: LinkOptions, **parts: Unpack[LinkParts]
    ) -> None:
        super().__init__(terminal, options, **parts)
        # Answers on TCP come in order on the connection that carried the frame;
        # frame ranges kept for MQTT's late answers mean nothing here.
        terminal.frames.clear()

    async def _connect_and_serve(self, backoff: Backoff) -> None:
        options = self.options
        try:
            async with asyncio.timeout(options.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    options.host,
                    options.port,
                    ssl=options.ssl,
                    server_hostname=options.server_hostname if options.ssl else None,
                )
        except OSError as exc:  # refused, unreachable, TLS handshake, or the timeout
            raise ConnectFailed(str(exc), terminal_id=self.terminal.terminal_id) from exc
        try:
            with self._connected(writer.transport.abort):
                await _Session(self, reader, writer).serve(backoff)
        finally:
            writer.transport.abort()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _Session:
    """One TCP connection: HELLO, WELCOME, then a sender and a receiver."""

    def __init__(
        self, link: TerminalLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.link = link
        self.terminal = link.terminal
        self.report = link.report
        self.options = link.options
        self._reader = reader
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._stream = FrameStream(self.terminal.key_of, zero_tag_naks=True)
        self._events: deque[Event] = deque()
        self._session = TerminalSession(Transport.TCP, self.terminal.terminal_id)
        self._retry: deque[tuple[int, int]] = deque()
        self._cursor = 0
        self._paused_until = 0.0
        self._busy = Backoff(self.options.busy, link.rng)
        self._gateway_closed = asyncio.Event()

    def _ended(self, kind: type[SessionEnded], detail: str) -> SessionEnded:
        return kind(detail, terminal_id=self.terminal.terminal_id)

    async def serve(self, reconnect: Backoff) -> None:
        terminal = self.terminal
        await self._transmit(
            Hello(
                terminal.terminal_id,
                self.options.fw_version,
                terminal.boot_count,
                terminal.clock.now(),
                0 if terminal.clock.synced else c.CLOCK_UNSYNCED,
                min(len(terminal.pending), MAX_QUEUED_FIELD),
            ),
        )
        welcome = await self._await_welcome()
        terminal.clock.set(welcome.gateway_time)
        if welcome.next_seq > terminal.next_seq:
            self.report.gateway_ahead += 1
            self.link.log.warning(
                "gateway has seqs this terminal never made; was its state lost?",
                next_seq=terminal.next_seq,
                gateway_next_seq=welcome.next_seq,
            )
        self._cursor = min(terminal.pending, default=terminal.next_seq)
        self.link.session_opened(reconnect)
        await self.link.serve_both(self._receive(), self._send())

    async def _await_welcome(self) -> Welcome:
        try:
            async with asyncio.timeout(self.options.answer_timeout):
                answer = await self._next_answer()
        except TimeoutError:
            raise self._ended(AnswerTimeout, "no WELCOME") from None
        match answer:
            case Welcomed():
                return answer.welcome
            case Naked():
                self.link.count_nak(answer)  # UNKNOWN_TERMINAL: stopped
                raise self._ended(Refused, f"NAK {answer.nak.code.name}")
        raise AssertionError(f"{answer} after HELLO")  # pragma: no cover

    # ------------------------------------------------------------ receiving

    async def _next_event(self) -> Event:
        while not self._events:
            try:
                data = await self._reader.read(READ_SIZE)
            except OSError as exc:
                self._gateway_closed.set()
                raise self._ended(ConnectionLost, str(exc)) from exc
            if not data:
                self._gateway_closed.set()
                raise self._ended(ConnectionLost, "closed")
            self._events.extend(self._stream.feed(data))
        return self._events.popleft()

    async def _next_answer(self) -> TerminalEvent:
        """The next answer from the gateway, as the session reads it; a violation ends it."""
        event = await self._next_event()
        try:
            return self._session.receive(event)
        except GatewayViolation as violation:
            raise self._protocol_error(violation.reason) from None

    def _protocol_error(self, detail: str) -> SessionEnded:
        self.link.gateway_broke_protocol(detail)
        return self._ended(GatewayProtocolError, detail)

    async def _receive(self) -> None:
        while True:
            # An ACK that does not match its frame is a violation: FIFO matching is
            # lost, and the records stay pending for the next session.
            answer = await self._next_answer()
            self.link.wake.set()
            match answer:
                case Acked(sent=Sent() as sent):
                    self._on_ack(sent)
                case Naked(sent=Sent() as sent):
                    self._on_nak(sent, answer)
                case _:
                    raise self._protocol_error(f"{answer} in session")  # pragma: no cover

    def _on_ack(self, sent: Sent) -> None:
        if sent.frame_type is not FrameType.PRESSES:
            return
        self.link.acknowledge(sent.first_seq, sent.last_seq)
        self._busy.reset()

    def _on_nak(self, sent: Sent, naked: Naked) -> None:
        if naked.problem is not None:
            self.report.gateway_error(naked.problem)
        self.link.count_nak(naked)  # UNKNOWN_TERMINAL: stopped
        is_presses = sent.frame_type is FrameType.PRESSES
        match naked.action:
            case NakAction.RETRY_LATER:
                if is_presses:
                    self._retry.append((sent.first_seq, sent.last_seq))
                self._paused_until = self._loop.time() + self._busy.next_delay()
            case NakAction.RETRY:
                if is_presses:
                    self._retry.append((sent.first_seq, sent.last_seq))
            case NakAction.FIRMWARE_BUG:
                # The records stay pending (the next session sends them again); the
                # gateway may close.
                self.link.refused(naked, sent.describe())

    # ------------------------------------------------------------ sending

    async def _send(self) -> None:
        window = self.options.window
        while True:
            self.link.wake.clear()
            now = self._loop.time()
            oldest = self._session.oldest
            if oldest is not None and now >= oldest.at + self.options.answer_timeout:
                raise self._ended(AnswerTimeout, f"no answer to {oldest.describe()}")
            if len(self._session.in_flight) < window:
                frame = self._next_frame(now)
                if frame is not None:
                    await self._transmit(*frame)
                    continue
            await self.link.wait_for_wake(self._next_deadline(now))

    def _next_deadline(self, now: float) -> float:
        deadlines = []
        oldest = self._session.oldest
        if oldest is not None:
            deadlines.append(oldest.at + self.options.answer_timeout)
        if len(self._session.in_flight) < self.options.window:
            deadlines.append(self.link.heartbeat_deadline)
            if self._paused_until > now:
                deadlines.append(self._paused_until)
        return min(deadlines)

    def _next_frame(self, now: float) -> tuple[Frame, tuple[MadePress, ...]] | None:
        """The next frame to send, with its records: a due heartbeat, a retry, new records."""
        terminal = self.terminal
        heartbeat = self.link.heartbeat_due(now)
        if heartbeat is not None:
            return heartbeat, ()
        if now < self._paused_until:
            return None
        max_records = self.options.max_records
        while self._retry:
            first, last = self._retry.popleft()
            batch = terminal.next_batch(first, last, max_records)
            if batch:
                if batch[-1].seq < last:
                    self._retry.appendleft((batch[-1].seq + 1, last))
                return self.link.presses_frame(batch), batch
        batch = terminal.next_batch(self._cursor, MAX_SEQ, max_records)
        if batch:
            self._cursor = batch[-1].seq + 1
            return self.link.presses_frame(batch), batch
        self._cursor = max(self._cursor, terminal.next_seq)
        return None

    async def _transmit(self, frame: Frame, records: tuple[MadePress, ...] = ()) -> None:
        link = self.link
        data, faults = link.encode_with_faults(frame)
        self._session.send(frame, at=self._loop.time())  # in flight unless a HELLO
        self.report.sent(frame_type(frame).name, records, len(self._session.in_flight))
        split = Fault.SPLIT_WRITE in faults
        if Fault.DROP_MID_FRAME in faults:
            await self._write(data[: link.faults.cut(len(data))], split=split)
            link.abort(Fault.DROP_MID_FRAME.value)
            raise self._ended(ConnectionLost, "dropped mid-frame on purpose")
        await self._write(data, split=split)
        if Fault.GARBAGE in faults:
            await self._write(link.faults.garbage(), split=False)
            await self._wait_for_gateway_to_close()
        if Fault.DROP in faults:
            link.abort(Fault.DROP.value)
            raise self._ended(ConnectionLost, "dropped on purpose")

    async def _wait_for_gateway_to_close(self) -> None:
        """After garbage the stream is broken: send nothing more, the gateway must close."""
        try:
            async with asyncio.timeout(self.options.answer_timeout):
                await self._gateway_closed.wait()
        except TimeoutError:
            raise self._ended(AnswerTimeout, "gateway did not close after garbage") from None
        raise self._ended(ConnectionLost, "closed after garbage")

    async def _write(self, data: bytes, *, split: bool) -> None:
        writer = self._writer
        try:
            if split:
                for index in range(len(data)):
                    writer.write(data[index : index + 1])
                    await writer.drain()
                    # Let the loop send this byte on its own before the next one.
                    await asyncio.sleep(0)
            else:
                writer.write(data)
                await writer.drain()
        except OSError as exc:
            raise self._ended(ConnectionLost, str(exc)) from exc
