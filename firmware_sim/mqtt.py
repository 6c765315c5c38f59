"""One terminal's MQTT link to the gateway, as the firmware runs it (spec sections 4 and 5).

Each terminal is its own MQTT client with a persistent session::

    terminal                    broker                         gateway
      CONNECT smiley-terminal-{id}, username {id}, clean start off
      SUBSCRIBE smiley/v1/{id}/down, QoS 1
      PUBLISH smiley/v1/{id}/up  ----------------------------->  PRESSES / HEARTBEAT
                                 <-----------------------------  ACK / NAK on .../down

No HELLO: the terminal takes its clock from the gateway_time of ACKs. Answers
are matched by seq, not by order, to the open frames (``mqtt_frames.py``):

- ACK with acked_seq equal to the last seq of an open frame: its records are done.
- NAK BUSY or BAD_CRC with ref_seq equal to the first seq of an open frame: publish
  it again (after a backoff for BUSY). Other NAKs are firmware bugs: reported, and
  the frame is published again when its answer timeout runs out.
- No answer within ``answer_timeout``: publish it again, each time waiting twice as
  long, up to ``max_answer_timeout``. The gateway deduplicates by (terminal, seq).
- An ACK for a frame ACKed before counts as duplicate; one naming no frame at
  all (left in the session by an earlier run) is counted and ignored.

At most ``window`` PRESSES frames are open at once. Frames whose publish was
not acknowledged by the broker (PUBACK) are published again as soon as a new
connection is up; the others wait for their answer, which the broker keeps in
the session.

The clock is set only from an ACK that answers a PRESSES frame published exactly
once, on the current connection, at most ``clock_sync_max_rtt`` seconds before
(Karn's rule): any other ACK may be an old answer that waited in the session, and
its gateway_time would set the clock back. A HEARTBEAT ACK (acked_seq 0) cannot
say which heartbeat it answers, so it never sets the clock.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Unpack

from firmware_sim.backoff import Backoff
from firmware_sim.errors import ConnectionLost
from firmware_sim.faults import Fault
from firmware_sim.link import Link, LinkParts, SessionOptions
from firmware_sim.mqtt_client import Incoming, MqttConnection, MqttProtocol
from firmware_sim.mqtt_frames import OpenFrame, OpenFrames
from firmware_sim.terminal import MadePress, Terminal
from protocols.constants import FrameType
from protocols.errors import DecodeError, GatewayViolation
from protocols.frames import Ack, Frame, decode, frame_type
from protocols.session import Transport
from protocols.terminal_session import Acked, NakAction, Naked, TerminalSession

PasswordSource = Callable[[int], str | None] | Mapping[int, str] | None
"""A terminal's MQTT password by id: a function, a mapping (absent: none), or none at all."""


@dataclass(frozen=True, slots=True)
class MqttLinkOptions(SessionOptions):
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
    max_answer_timeout: float = 300.0
    clock_sync_max_rtt: float = 5.0
    """An ACK sets the clock only if it came this soon after its (only) publish."""

    def __post_init__(self) -> None:
        # Named, not super(): zero-argument super() fails in a slots dataclass (3.11).
        SessionOptions.__post_init__(self)
        if self.receive_maximum < 1:
            raise ValueError("receive_maximum must be at least 1")
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


class MqttTerminalLink(Link[MqttLinkOptions]):
    """Keeps one terminal's MQTT session: reconnects with backoff until cancelled or stopped."""

    transport = "mqtt"

    def __init__(
        self, terminal: Terminal, options: MqttLinkOptions, **parts: Unpack[LinkParts]
    ) -> None:
        super().__init__(terminal, options, **parts)
        self._open = OpenFrames(terminal, self.on_change)
        self._connection = 0
        self._session = TerminalSession(Transport.MQTT, terminal.terminal_id)
        self._busy = Backoff(options.busy, self.rng)
        self._paused_until = 0.0
        self._loop = asyncio.get_running_loop()

    def power_loss(self) -> None:
        """As on TCP; the frames stay (flash), but all are published again on reconnect."""
        super().power_loss()
        for frame in self._open:
            frame.delivered = False
            frame.connection = 0
        self._paused_until = 0.0
        self._busy.reset()

    # ------------------------------------------------------------ the connection loop

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
        await client.connect()  # ConnectFailed if there is no session
        self._connection += 1
        graceful = False
        try:
            with self._connected(client.abort):
                await client.subscribe(options.down_topic(terminal_id))
                now = self.session_opened(backoff)
                for frame in self._open:
                    if not frame.delivered:
                        frame.due = min(frame.due, now)
                await self.serve_both(self._receive(client), self._send(client))
        except asyncio.CancelledError:
            graceful = True  # the fleet is shutting down: say goodbye (the session stays)
            raise
        finally:
            await client.close(graceful=graceful)

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
            self.gateway_broke_protocol(f"{violation.reason} on {message.topic}")
            return
        match answer:
            case Acked():
                self._on_ack(answer.ack)
            case Naked():
                self._on_nak(answer)

    def _on_ack(self, ack: Ack) -> None:
        if ack.acked_type == FrameType.HEARTBEAT:
            return  # it cannot say which heartbeat it answers
        frame = self._open.close(ack.acked_seq)
        if frame is None:
            size = self._open.acked_lately(ack.acked_seq)
            if size is not None:
                self.report.acked_records((), size)  # counted as duplicate_acks
            else:
                self.report.unmatched_answers += 1
                self.log.debug("ACK names no open frame", acked_seq=ack.acked_seq)
            return
        self._busy.reset()
        if (
            frame.attempts == 1
            and frame.connection == self._connection
            and self._loop.time() - frame.published_at <= self.options.clock_sync_max_rtt
        ):
            self.terminal.clock.set(ack.gateway_time)
        self.acknowledge(frame.first, frame.last)
        self.wake.set()

    def _on_nak(self, naked: Naked) -> None:
        self.count_nak(naked)  # UNKNOWN_TERMINAL: stopped
        nak = naked.nak
        now = self._loop.time()
        if naked.action is NakAction.RETRY_LATER:
            self._paused_until = now + self._busy.next_delay()
        frame = self._open.named_by_nak(nak.ref_seq)
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
                self.refused(naked, f"PRESSES seq {frame.first}..{frame.last}")
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
            await self.wait_for_wake(self._next_deadline(now))

    def _next_deadline(self, now: float) -> float:
        deadlines = [self.heartbeat_deadline]
        earliest_due = self._open.earliest_due()
        if earliest_due is not None:
            deadlines.append(max(earliest_due, self._paused_until))
        if self._paused_until > now:
            deadlines.append(self._paused_until)
        return min(deadlines)

    def _next_frame(
        self, now: float
    ) -> tuple[Frame, tuple[MadePress, ...], OpenFrame | None] | None:
        """The next frame to publish: a due heartbeat, a due open frame, or new records."""
        heartbeat = self.heartbeat_due(now)
        if heartbeat is not None:
            return heartbeat, (), None
        if now < self._paused_until:
            return None
        chosen = self._open.next_due(now)
        if chosen is None and len(self._open) < self.options.window:
            chosen = self._open.open_next(self.options.max_records)
        if chosen is None:
            return None
        frame, batch = chosen
        return self.presses_frame(batch), batch, frame

    async def _publish(
        self,
        client: MqttConnection,
        frame: Frame,
        records: tuple[MadePress, ...],
        open_frame: OpenFrame | None,
    ) -> None:
        # Split writes do not exist on MQTT: the broker gets whole messages.
        data, faults = self.encode_with_faults(frame, impossible=frozenset({Fault.SPLIT_WRITE}))
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
        self.report.sent(frame_type(frame).name, records, len(self._open))
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
