"""MQTT transport: the spec's section 4 (MQTT) through a broker, with aiomqtt.

The gateway keeps a persistent session (fixed client id, no clean start, a
session expiry), subscribes ``smiley/v1/+/up`` at QoS 1 (or, with
``mqtt.shared_group``, ``$share/{group}/smiley/v1/+/up``, so that the instances
of a group share the messages) and answers on ``smiley/v1/{terminal_id}/down``
at QoS 1, whichever instance took the message.

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
    MqttConnection,
    Reply,
    _Link,
    _paho,
)
from gateway.transports.mqtt_topics import UP_TOPICS, down_topic, topic_terminal
from protocols.errors import DecodeError
from protocols.frames import Frame, Heartbeat, Presses, decode
from protocols.session import Decision, GatewaySession, Refuse, Transport, ack_for

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


_Refusal = Refuse
"""A message the gateway does not count: quarantined (and NAKed, if the session says so),
then acknowledged."""


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
        self._rules = GatewaySession(Transport.MQTT, registry.key_for)

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
        decision = self._frame(bytes(message.payload), topic)
        if isinstance(decision, Refuse):
            self._log_refusal(decision, topic)
            return _Taken(message, refusal=decision)
        frame = decision.frame
        if isinstance(frame, Presses):
            return _Taken(message, placed=self._ingest.place(frame, origin))
        assert isinstance(frame, Heartbeat)  # the session takes nothing else over MQTT
        self._ingest.heartbeat(frame, origin)
        ack = ack_for(frame, int(self._clock()))
        return _Taken(message, reply=(frame.terminal_id, self._encode(ack)))

    def _frame(self, payload: bytes, topic: str) -> Decision:
        """What the session decides about a message: accept its frame, or refuse it."""
        event: Frame | DecodeError
        try:
            event = decode(payload, self._registry.key_for)
        except DecodeError as error:
            event = error
        return self._rules.receive(event, raw=payload, topic_terminal=topic_terminal(topic))

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
            return frame.terminal_id, self._encode(ack_for(frame, int(self._clock())))
        if item.refusal is None:
            return item.reply
        nak = item.refusal.nak
        if nak is None:
            return None
        self._ingest.nak_sent(nak.code)
        return nak.terminal_id, self._encode(nak)

    def _log_refusal(self, refusal: _Refusal, topic: str) -> None:
        error = refusal.error
        log.warning(
            "frame_refused",
            transport=TRANSPORT,
            topic=topic,
            reason=refusal.reason,
            detail=error.reason,
            terminal_id=error.terminal_id,
        )

    def _encode(self, frame: Frame) -> bytes:
        return self._rules.encode(frame)
