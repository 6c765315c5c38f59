"""MQTT transport: the spec's section 4 (MQTT) through a broker, with aiomqtt.

The gateway keeps a persistent session (fixed client id, no clean start, a
session expiry), subscribes ``smiley/v1/+/up`` at QoS 1 and answers on
``smiley/v1/{terminal_id}/down`` at QoS 1.

PUBACK only after commit: aiomqtt acknowledges a QoS 1 message as soon as
paho has queued it in memory, so a crash would lose it. Underneath aiomqtt we
switch paho to manual acknowledgement and send each PUBACK once the frame is
committed (or refused and quarantined). A message whose PUBACK was never sent
is redelivered by the broker when the session resumes.

Batches: we take paho's ``on_message`` from aiomqtt (whose queue and
iterator cost a task and several futures per message) and handle together the
messages that one read of the socket brought: decoded at once, their frames,
counted and refused alike, committed in one outbox job, and only then their
answers published and their PUBACKs sent.

Answers before PUBACKs: a message's answer is handed to paho before its
PUBACK, on the same connection, and paho writes packets in the order they were
queued; so the broker holds the answer before it lets go of the message,
without our waiting for the answer's own PUBACK. For that paho must never hold
a publish back: its own in-flight limit is off, and :class:`_Link` keeps at
most the broker's Receive Maximum of answers unacknowledged instead.

Backpressure: the MQTT v5 Receive Maximum tells the broker how many QoS 1
messages may be unacknowledged at once (``max_in_flight``). A message waiting
for a commit holds its slot, so while the outbox is slow or refusing, the
broker stops sending and keeps the rest; nothing is buffered without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as paho
import structlog

from gateway.backoff import Backoff
from gateway.errors import OutboxBusy
from gateway.intake.ingest import Ingest, Origin, Placed, refusal_row
from gateway.registry.config import Config
from gateway.registry.terminals import Registry
from gateway.transports.mqtt_link import (
    DEFAULT_RECEIVE_MAXIMUM,
    UP_TOPICS,
    MqttConnection,
    Reply,
    _Link,
    _paho,
    down_topic,
)
from protocols.constants import FrameType, NakCode
from protocols.errors import DecodeError
from protocols.frames import Ack, Frame, Heartbeat, Nak, Presses, decode, encode

log = structlog.get_logger("gateway.mqtt")

TRANSPORT = "mqtt"
Clock = Callable[[], float]
__all__ = [
    "DEFAULT_RECEIVE_MAXIMUM",
    "UP_TOPICS",
    "MqttIngest",
    "Reply",
    "_Link",
    "_paho",
    "down_topic",
    "topic_terminal",
]


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


@dataclass(slots=True)
class _Taken:
    """One message of a batch, and what it needs: a commit, a quarantine, or only an answer."""

    message: paho.MQTTMessage
    placed: Placed | None = None
    refusal: _Refusal | None = None
    reply: Reply | None = None
    """Set at once for a frame that needs no commit (HEARTBEAT)."""


class MqttIngest(MqttConnection):
    """Takes terminal frames from the broker; reconnects for as long as it runs.

    The connection (client, reconnect loop, paho callbacks) is
    :class:`~gateway.transports.mqtt_link.MqttConnection`'s; this class decides
    what each message of a batch needs.
    """

    def __init__(
        self,
        config: Config,
        ingest: Ingest,
        registry: Registry,
        *,
        clock: Clock,
    ) -> None:
        super().__init__(config)
        self._ingest = ingest
        self._registry = registry
        self._clock = clock
        self._commit_backoff_cap = 5.0

    async def _handle(self, link: _Link, batch: Sequence[paho.MQTTMessage]) -> None:
        """Commit what the batch's frames need, then answer and PUBACK each message."""
        received_at = self._clock()  # one read of the socket brought them all
        taken = [self._take(message, received_at) for message in batch]
        waiting = []
        for item in taken:
            if item.placed is None and item.refusal is None:
                if not await link.answer(item.message, item.reply):
                    return
            else:
                waiting.append(item)
        if not waiting:
            return
        placed = [item.placed for item in waiting if item.placed is not None]
        refused = [(item.refusal, item.message.topic) for item in waiting if item.refusal]
        await self._commit(placed, refused, received_at)
        for item in waiting:
            if not await link.answer(item.message, self._reply(item)):
                return

    def _take(self, message: paho.MQTTMessage, received_at: float) -> _Taken:
        topic = message.topic
        origin = Origin(TRANSPORT, topic, received_at)
        try:
            frame = self._frame(bytes(message.payload), topic)
        except _Refusal as refusal:
            self._log_refusal(refusal, topic)
            return _Taken(message, refusal=refusal)
        if isinstance(frame, Presses):
            return _Taken(message, placed=self._ingest.place(frame, origin))
        self._ingest.heartbeat(frame, origin)
        ack = Ack(frame.terminal_id, FrameType.HEARTBEAT, 0, int(self._clock()))
        return _Taken(message, reply=(frame.terminal_id, self._encode(ack)))

    def _frame(self, payload: bytes, topic: str) -> Presses | Heartbeat:
        """The frame of a message, or _Refusal saying why it is not taken."""
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
        if not isinstance(frame, Presses | Heartbeat):
            unsupported = DecodeError(
                f"{type(frame).__name__} is not accepted from a terminal over MQTT",
                raw=payload,
                terminal_id=frame.terminal_id,
            )
            raise _Refusal(unsupported, NakCode.UNSUPPORTED, reason="UNSUPPORTED")
        return frame

    async def _commit(
        self,
        placed: Sequence[Placed],
        refused: Sequence[tuple[_Refusal, str]],
        received_at: float,
    ) -> None:
        """Commit, retrying while the outbox refuses; the messages keep their slots meanwhile."""
        rows = [
            refusal_row(r.error, Origin(TRANSPORT, topic, received_at), r.reason)
            for r, topic in refused
        ]
        backoff: Backoff | None = None  # made on the first refusal only: this is per batch
        while True:
            try:
                await self._ingest.commit(placed, rows)
            except OutboxBusy as exc:
                if backoff is None:
                    log.warning(
                        "presses_busy",
                        terminal_ids=sorted({p.frame.terminal_id for p in placed}),
                        frames=len(placed) + len(rows),
                        error=str(exc),
                    )
                    backoff = Backoff(initial=0.2, cap=self._commit_backoff_cap)
                await asyncio.sleep(backoff.next_delay())
                continue
            return

    def _reply(self, item: _Taken) -> Reply | None:
        """The answer to a committed frame: ACK for PRESSES, NAK where a refusal gets one."""
        if item.placed is not None:
            frame = item.placed.frame
            ack = Ack(frame.terminal_id, FrameType.PRESSES, frame.last_seq, int(self._clock()))
            return frame.terminal_id, self._encode(ack)
        if item.refusal is None:
            return item.reply
        error = item.refusal.error
        if item.refusal.nak is None or error.terminal_id is None:
            return None
        self._ingest.nak_sent(item.refusal.nak)
        return error.terminal_id, self._encode(
            Nak(error.terminal_id, item.refusal.nak, error.ref_seq)
        )

    def _log_refusal(self, refusal: _Refusal, topic: str) -> None:
        error = refusal.error
        log.warning(
            "frame_refused",
            transport=TRANSPORT,
            topic=topic,
            reason=refusal.reason or error.name,
            detail=error.reason,
            terminal_id=error.terminal_id,
        )

    def _encode(self, frame: Frame) -> bytes:
        return encode(frame, self._registry.key_for(frame.terminal_id))
