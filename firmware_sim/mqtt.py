"""One terminal's MQTT link to the gateway, as the firmware runs it (spec sections 4 and 5).

Each terminal is its own MQTT client with a persistent session::

    terminal                    broker                         gateway
      CONNECT smiley-terminal-{id}, username {id}, clean start off
      SUBSCRIBE smiley/v1/{id}/down, QoS 1
      PUBLISH smiley/v1/{id}/up  ----------------------------->  PRESSES / HEARTBEAT
                                 <-----------------------------  ACK / NAK on .../down

No HELLO: the terminal takes its clock from the gateway_time of ACKs. Answers
are matched by seq, not by order, because MQTT may deliver an answer after a
reconnect (it waited in the session) or answer one publish of a frame twice:

- ACK with acked_seq equal to the last seq of an open frame: its records are done.
- NAK BUSY or BAD_CRC with ref_seq equal to the first seq of an open frame: publish
  it again (after a backoff for BUSY). Other NAKs are firmware bugs: reported, and
  the frame is published again when its answer timeout runs out.
- No answer within ``answer_timeout``: publish it again, each time waiting twice as
  long, up to ``max_answer_timeout``. The gateway deduplicates by (terminal, seq).
- An ACK for a frame ACKed before counts as duplicate; one naming no frame at
  all (left in the session by an earlier run) is counted and ignored.

At most ``window`` PRESSES frames are open at once. The open frames live in
``Terminal.frames`` (flash) with their records: they keep their boundaries across
reconnects, power losses and runs, so a late ACK names exactly the records the
gateway committed. Frames whose publish was not acknowledged by the broker
(PUBACK) are published again as soon as a new connection is up; the others wait
for their answer, which the broker keeps in the session.

The clock is set only from an ACK that answers a PRESSES frame published exactly
once, on the current connection, at most ``clock_sync_max_rtt`` seconds before
(Karn's rule): any other ACK may be an old answer that waited in the session, and
its gateway_time would set the clock back. A HEARTBEAT ACK (acked_seq 0) cannot
say which heartbeat it answers, so it never sets the clock.
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from firmware_sim.backoff import Backoff, BackoffOptions
from firmware_sim.errors import ConnectFailed, ConnectionLost, SessionEnded, TerminalStopped
from firmware_sim.faults import Fault, FaultPlanner
from firmware_sim.link import Link
from firmware_sim.mqtt_client import Incoming, MqttConnection, MqttProtocol
from firmware_sim.report import TerminalReport
from firmware_sim.terminal import MAX_SEQ, MadePress, Terminal
from protocols import constants as c
from protocols.constants import FrameType
from protocols.errors import DecodeError, GatewayViolation
from protocols.frames import Ack, Frame, decode, encode, frame_type
from protocols.session import Transport
from protocols.terminal_session import Acked, NakAction, Naked, TerminalSession

PasswordSource = Callable[[int], str | None] | Mapping[int, str] | None
"""A terminal's MQTT password by id: a function, a mapping (absent: none), or none at all."""

REMEMBERED_ACKS = 256
"""Frames ACKed lately, kept (last seq to size) to tell a duplicate ACK from a stray one."""


@dataclass(frozen=True, slots=True)
class MqttLinkOptions:
    """How every terminal of a fleet talks MQTT to one broker (and through it the gateway)."""

    host: str
    port: int = 1883
    protocol: MqttProtocol = MqttProtocol.V5
    password: PasswordSource = None
    """The username is the terminal id in decimal; this gives the password, if any."""
    ssl: ssl.SSLContext | None = None
    session_expiry: int = 3600
    """MQTT v5: seconds the broker keeps a terminal's session after it went away."""
    keepalive: int = 60
    receive_maximum: int = 32
    """Answers delivered and not yet handled (v5 Receive Maximum; the incoming queue's
    size). On 3.1.1 the broker's in-flight limit must not exceed it."""
    topic_prefix: str = "smiley/v1"
    client_id_prefix: str = "smiley-terminal-"
    window: int = 4
    """PRESSES frames published and not answered yet."""
    max_records: int = 50
    """Records per PRESSES frame, 1..680."""
    heartbeat_interval: float = 60.0
    connect_timeout: float = 10.0
    """Longest wait for CONNACK, SUBACK, PUBACK or a graceful DISCONNECT."""
    answer_timeout: float = 30.0
    """Wait for the answer to a frame before publishing it again (then twice as long...)."""
    max_answer_timeout: float = 300.0
    clock_sync_max_rtt: float = 5.0
    """An ACK sets the clock only if it came this soon after its (only) publish."""
    reconnect: BackoffOptions = field(default_factory=BackoffOptions)
    busy: BackoffOptions = field(default_factory=lambda: BackoffOptions(0.5, 10.0))
    """Pause after NAK BUSY before publishing PRESSES again."""
    battery_pct: int = c.MAINS_POWERED
    signal_dbm: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= c.MAX_RECORDS:
            raise ValueError(f"max_records must be 1..{c.MAX_RECORDS}, not {self.max_records}")
        if self.window < 1 or self.receive_maximum < 1:
            raise ValueError("window and receive_maximum must be at least 1")
        if min(self.heartbeat_interval, self.connect_timeout, self.answer_timeout) <= 0:
            raise ValueError("intervals and timeouts must be positive")
        if self.max_answer_timeout < self.answer_timeout or self.clock_sync_max_rtt < 0:
            raise ValueError("need max_answer_timeout >= answer_timeout, clock_sync_max_rtt >= 0")
        if not 0 <= self.session_expiry <= 0xFFFFFFFF or not 0 <= self.keepalive <= 0xFFFF:
            raise ValueError("session_expiry is a u32 and keepalive a u16 of seconds")
        if not self.topic_prefix or any(ch in self.topic_prefix for ch in "+#"):
            raise ValueError(f"topic_prefix {self.topic_prefix!r} must be a plain topic")

    def up_topic(self, terminal_id: int) -> str:
        return f"{self.topic_prefix}/{terminal_id}/up"

    def down_topic(self, terminal_id: int) -> str:
        return f"{self.topic_prefix}/{terminal_id}/down"

    def client_id(self, terminal_id: int) -> str:
        return f"{self.client_id_prefix}{terminal_id}"

    def password_of(self, terminal_id: int) -> str | None:
        source = self.password
        if source is None:
            return None
        if isinstance(source, Mapping):
            return source.get(terminal_id)
        return source(terminal_id)

    def answer_timeout_of(self, attempt: int) -> float:
        """How long publish number ``attempt`` (1, 2, ...) of a frame waits for its answer."""
        return min(self.answer_timeout * 2.0 ** min(attempt - 1, 32), self.max_answer_timeout)


@dataclass(slots=True)
class _OpenFrame:
    """A PRESSES frame published (or about to be) and not ACKed: its records stay pending."""

    first: int
    last: int
    attempts: int = 0
    """Publishes so far (a restored frame counts as published once)."""
    connection: int = 0
    """The connection of the last publish (0: none of this run's)."""
    published_at: float = -math.inf
    due: float = 0.0
    """When to publish it (again), loop time."""
    delivered: bool = False
    """The broker acknowledged the last publish (PUBACK)."""

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class MqttTerminalLink(Link):
    """Keeps one terminal's MQTT session: reconnects with backoff until cancelled or stopped."""

    transport = "mqtt"

    def __init__(
        self,
        terminal: Terminal,
        options: MqttLinkOptions,
        *,
        report: TerminalReport,
        faults: FaultPlanner,
        rng: random.Random,
        max_pending: int,
        on_change: Callable[[], None],
    ) -> None:
        super().__init__(
            terminal,
            report=report,
            faults=faults,
            rng=rng,
            max_pending=max_pending,
            on_change=on_change,
        )
        self.options = options
        self._frames: dict[int, _OpenFrame] = {}
        """Open frames by first seq."""
        self._first_of: dict[int, int] = {}
        """First seq of an open frame by its last seq (what an ACK names)."""
        self._acked: OrderedDict[int, int] = OrderedDict()
        self._cursor = 0
        """Every pending record from here up is in no frame yet; all below are in one."""
        self._connection = 0
        self._session = TerminalSession(Transport.MQTT, terminal.terminal_id)
        self._client: MqttConnection | None = None
        self._busy = Backoff(options.busy, rng)
        self._paused_until = 0.0
        self._last_heartbeat = 0.0
        self._loop = asyncio.get_running_loop()
        self._restore_frames()

    # ------------------------------------------------------------ called by the fleet

    def abort(self, reason: str) -> None:
        """Cut the connection without DISCONNECT, if there is one."""
        if self._client is not None:
            self._abort_reason = reason
            self._client.abort()

    def power_loss(self) -> None:
        """As on TCP; the frames stay (flash), but all are published again on reconnect."""
        super().power_loss()
        for frame in self._frames.values():
            frame.delivered = False
            frame.connection = 0
        self._paused_until = 0.0
        self._busy.reset()

    # ------------------------------------------------------------ the connection loop

    async def run(self) -> None:
        backoff = Backoff(self.options.reconnect, self.rng)
        while True:
            try:
                await self._connect_and_serve(backoff)
            except TerminalStopped:
                self._stop()
                return
            except SessionEnded as exc:
                reason = self._abort_reason or type(exc).__name__
                self.report.session_ends[reason] += 1
                self.log.debug("session ended", reason=reason, detail=exc.detail)
            except ConnectFailed as exc:
                self.report.connect_failures += 1
                self.log.debug("connect failed", error=exc.detail)
            await asyncio.sleep(backoff.next_delay())

    async def _connect_and_serve(self, backoff: Backoff) -> None:
        options = self.options
        terminal_id = self.terminal.terminal_id
        client = MqttConnection(
            terminal_id=terminal_id,
            host=options.host,
            port=options.port,
            client_id=options.client_id(terminal_id),
            username=str(terminal_id),
            password=options.password_of(terminal_id),
            protocol=options.protocol,
            session_expiry=options.session_expiry,
            keepalive=options.keepalive,
            receive_maximum=options.receive_maximum,
            timeout=options.connect_timeout,
            tls=options.ssl,
        )
        await client.connect()
        self._connection += 1
        self.report.connects += 1
        self._abort_reason = None
        self._client = client
        graceful = False
        try:
            await client.subscribe(options.down_topic(terminal_id))
            self.report.sessions += 1
            backoff.reset()
            now = self._loop.time()
            for frame in self._frames.values():
                if not frame.delivered:
                    frame.due = min(frame.due, now)
            self._last_heartbeat = now
            self.in_session.set()
            self.on_change()
            await self._run_sender_and_receiver(client)
        except asyncio.CancelledError:
            graceful = True  # the fleet is shutting down: say goodbye (the session stays)
            raise
        finally:
            self._client = None
            self.in_session.clear()
            await client.close(graceful=graceful)

    async def _run_sender_and_receiver(self, client: MqttConnection) -> None:
        """Run both until one ends the session; cancel the other; raise why it ended.

        Not a TaskGroup: in Python 3.11 a TaskGroup whose child fails while the
        parent waits in ``__aexit__`` leaves the parent marked as cancelling.
        """
        terminal_id = self.terminal.terminal_id
        tasks = [
            asyncio.create_task(self._receive(client), name=f"mqtt-receive-{terminal_id}"),
            asyncio.create_task(self._send(client), name=f"mqtt-send-{terminal_id}"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        errors = [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
        if not errors:
            raise AssertionError("the sender and the receiver never return")
        raise min(errors, key=_severity)

    # ------------------------------------------------------------ receiving

    async def _receive(self, client: MqttConnection) -> None:
        while True:
            message = await client.next_message()
            self._handle(message)
            client.ack(message)

    def _handle(self, message: Incoming) -> None:
        event: Frame | DecodeError
        try:
            event = decode(message.payload, self.terminal.key_of, zero_tag_naks=True)
        except DecodeError as exc:
            event = exc
        try:
            answer = self._session.receive(event)
        except GatewayViolation as violation:
            # On MQTT a bad answer ends nothing: it is reported and ignored.
            self._gateway_error(f"{violation.reason} on {message.topic}")
            return
        match answer:
            case Acked():
                self._on_ack(answer.ack)
            case Naked():
                self._on_nak(answer)

    def _gateway_error(self, detail: str) -> None:
        self.report.gateway_error(detail)
        self.log.warning("gateway broke the protocol", detail=detail)

    def _on_ack(self, ack: Ack) -> None:
        if ack.acked_type == FrameType.HEARTBEAT:
            return  # it cannot say which heartbeat it answers
        first = self._first_of.get(ack.acked_seq)
        if first is None:
            size = self._acked.get(ack.acked_seq)
            if size is not None:
                self.report.acked_records((), size)  # counted as duplicate_acks
            else:
                self.report.unmatched_answers += 1
                self.log.debug("ACK names no open frame", acked_seq=ack.acked_seq)
            return
        frame = self._close_frame(first)
        acked = self.terminal.acknowledge(frame.first, frame.last)
        self.report.acked_records(acked, frame.count)
        self._acked[frame.last] = frame.count
        while len(self._acked) > REMEMBERED_ACKS:
            self._acked.popitem(last=False)
        self._busy.reset()
        if (
            frame.attempts == 1
            and frame.connection == self._connection
            and self._loop.time() - frame.published_at <= self.options.clock_sync_max_rtt
        ):
            self.terminal.clock.set(ack.gateway_time)
        self.records_acked()
        self.wake.set()

    def _on_nak(self, naked: Naked) -> None:
        nak = naked.nak
        self.report.naks[nak.code.name] += 1
        if naked.action is NakAction.STOP:
            raise TerminalStopped(self.terminal.terminal_id, self.report.outstanding)
        now = self._loop.time()
        if naked.action is NakAction.RETRY_LATER:
            self._paused_until = now + self._busy.next_delay()
        frame = self._frames.get(nak.ref_seq)
        if frame is None:
            if nak.ref_seq != 0:  # 0: a refused HEARTBEAT, or a frame from seq 0
                self.report.unmatched_answers += 1
            if naked.action is NakAction.FIRMWARE_BUG:
                self.report.firmware_bug(f"NAK {nak.code.name} ref_seq {nak.ref_seq}")
            return
        match naked.action:
            case NakAction.RETRY_LATER:
                frame.due = self._paused_until
            case NakAction.RETRY:
                frame.due = now
            case _:
                # MALFORMED, BAD_TAG, ...: what this firmware sent was wrong. The frame
                # stays open and goes again when its answer timeout runs out.
                detail = f"NAK {nak.code.name} for PRESSES seq {frame.first}..{frame.last}"
                self.report.firmware_bug(detail)
                self.log.error("gateway refused a frame", nak=nak.code.name, first_seq=frame.first)
        self.wake.set()

    # ------------------------------------------------------------ sending

    async def _send(self, client: MqttConnection) -> None:
        while True:
            self.wake.clear()
            now = self._loop.time()
            chosen = self._next_frame(now)
            if chosen is not None:
                await self._publish(client, *chosen)
                continue
            try:
                async with asyncio.timeout_at(self._next_deadline(now)):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _next_deadline(self, now: float) -> float:
        deadlines = [self._last_heartbeat + self.options.heartbeat_interval]
        if self._frames:
            deadlines.append(max(min(f.due for f in self._frames.values()), self._paused_until))
        if self._paused_until > now:
            deadlines.append(self._paused_until)
        return min(deadlines)

    def _next_frame(
        self, now: float
    ) -> tuple[Frame, tuple[MadePress, ...], _OpenFrame | None] | None:
        """The next frame to publish: a due heartbeat, a due open frame, or new records."""
        if now >= self._last_heartbeat + self.options.heartbeat_interval:
            self._last_heartbeat = now
            return self.heartbeat_frame(self.options), (), None
        if now < self._paused_until:
            return None
        due = [f for f in self._frames.values() if f.due <= now]
        if due:
            frame = min(due, key=_first_seq)
            pending = self.terminal.pending
            batch = tuple(pending[seq] for seq in range(frame.first, frame.last + 1))
            return self.presses_frame(batch), batch, frame
        if len(self._frames) >= self.options.window:
            return None
        batch = self.terminal.next_batch(self._cursor, MAX_SEQ, self.options.max_records)
        if not batch:
            self._cursor = max(self._cursor, self.terminal.next_seq)
            return None
        self._cursor = batch[-1].seq + 1
        frame = self._open_frame(batch[0].seq, batch[-1].seq)
        return self.presses_frame(batch), batch, frame

    async def _publish(
        self,
        client: MqttConnection,
        frame: Frame,
        records: tuple[MadePress, ...],
        open_frame: _OpenFrame | None,
    ) -> None:
        kind = frame_type(frame)
        # Split writes do not exist on MQTT: the broker gets whole messages.
        faults = self.faults.for_frame(kind) - {Fault.SPLIT_WRITE}
        for fault in faults:
            self.report.faults[fault.value] += 1
        data = encode(frame, self.terminal.key)
        if Fault.CORRUPT_CRC in faults:
            data = data[:-1] + bytes([data[-1] ^ 0x5A])
        now = self._loop.time()
        if open_frame is not None:
            # Registered before the publish: the ACK may come before our PUBACK does.
            open_frame.attempts += 1
            if open_frame.attempts > 1:
                self.report.republishes += 1
            open_frame.connection = self._connection
            open_frame.published_at = now
            open_frame.delivered = False
            open_frame.due = now + self.options.answer_timeout_of(open_frame.attempts)
        self.report.sent(kind.name, records, len(self._frames))
        if Fault.DROP_MID_FRAME in faults:
            self.abort(Fault.DROP_MID_FRAME.value)
            raise ConnectionLost(
                "dropped while publishing, on purpose", terminal_id=self.terminal.terminal_id
            )
        topic = self.options.up_topic(self.terminal.terminal_id)
        timeout = self.options.connect_timeout
        await client.publish(topic, data, timeout=timeout)
        if open_frame is not None and (open_frame.connection, open_frame.published_at) == (
            self._connection,
            now,
        ):
            open_frame.delivered = True  # unless a power loss came in between
        if Fault.GARBAGE in faults:
            await client.publish(topic, self.faults.garbage(), timeout=timeout)
        if Fault.DROP in faults:
            self.abort(Fault.DROP.value)
            raise ConnectionLost("dropped on purpose", terminal_id=self.terminal.terminal_id)

    # ------------------------------------------------------------ open frames

    def _open_frame(self, first: int, last: int) -> _OpenFrame:
        frame = _OpenFrame(first, last)
        self._frames[first] = frame
        self._first_of[last] = first
        self.terminal.frames[first] = last
        self.on_change()
        return frame

    def _close_frame(self, first: int) -> _OpenFrame:
        frame = self._frames.pop(first)
        del self._first_of[frame.last]
        self.terminal.frames.pop(first, None)
        return frame

    def _restore_frames(self) -> None:
        """Take the open frames saved with the records; drop any that no longer fit them.

        A frame fits when all its records are pending, of one clock group, in no other
        frame, and below every pending record that is in no frame (the cursor's rule).
        """
        terminal = self.terminal
        pending = terminal.pending
        kept: list[tuple[int, int]] = []
        covered: set[int] = set()
        for first, last in sorted(terminal.frames.items()):
            seqs = range(first, last + 1)
            if not 1 <= len(seqs) <= c.MAX_RECORDS or any(
                seq not in pending or seq in covered for seq in seqs
            ):
                continue
            if len({pending[seq].clock_group for seq in seqs}) != 1:
                continue
            kept.append((first, last))
            covered.update(seqs)
        lowest_free = min((seq for seq in pending if seq not in covered), default=None)
        if lowest_free is not None:
            kept = [(first, last) for first, last in kept if last < lowest_free]
        terminal.frames.clear()
        for first, last in kept:
            frame = self._open_frame(first, last)
            frame.attempts = 1  # published in an earlier run: never a clock source
        if lowest_free is not None:
            self._cursor = lowest_free
        else:
            self._cursor = max((last + 1 for _, last in kept), default=terminal.next_seq)


def _first_seq(frame: _OpenFrame) -> int:
    return frame.first


def _severity(exc: BaseException) -> int:
    """Which of two reasons a session ended for is reported: bugs first."""
    if isinstance(exc, TerminalStopped):
        return 1
    if isinstance(exc, SessionEnded):
        return 2
    return 0
