"""The terminal's side of the session of spec section 4, sans-I/O (gateway side: session.py).

One :class:`TerminalSession` per connection of a terminal::

    TCP   CONNECTED --send HELLO--> AWAITING_WELCOME --WELCOME--> OPEN
          AWAITING_WELCOME --NAK--> CLOSED (the gateway closes)
          OPEN --send PRESSES/HEARTBEAT, receive ACK/NAK (in order)--> OPEN
    MQTT  OPEN --publish PRESSES/HEARTBEAT, receive ACK/NAK (by seq)--> OPEN

:meth:`TerminalSession.send` checks a frame may go now and, on TCP, keeps it in
flight; :meth:`TerminalSession.receive` returns :class:`Welcomed`,
:class:`Acked` or :class:`Naked` (with the :class:`NakAction` a firmware takes),
or raises :class:`~protocols.errors.GatewayViolation`. On MQTT answers are not
matched here: they match open frames by seq, and may come after a reconnect.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from protocols.constants import FrameType, NakCode
from protocols.errors import DecodeError, GatewayViolation, NotAccepted, NotHello
from protocols.frame_model import Ack, Frame, Heartbeat, Nak, Presses, Welcome, frame_type
from protocols.session import Transport


class TerminalState(enum.Enum):
    CONNECTED = "connected"
    """TCP: connected, HELLO not sent yet."""
    AWAITING_WELCOME = "awaiting_welcome"
    OPEN = "open"
    CLOSED = "closed"


TERMINAL_SENDS: dict[Transport, dict[TerminalState, dict[FrameType, TerminalState]]] = {
    Transport.TCP: {
        TerminalState.CONNECTED: {FrameType.HELLO: TerminalState.AWAITING_WELCOME},
        TerminalState.AWAITING_WELCOME: {},
        TerminalState.OPEN: {
            FrameType.PRESSES: TerminalState.OPEN,
            FrameType.HEARTBEAT: TerminalState.OPEN,
        },
        TerminalState.CLOSED: {},
    },
    Transport.MQTT: {
        TerminalState.OPEN: {
            FrameType.PRESSES: TerminalState.OPEN,
            FrameType.HEARTBEAT: TerminalState.OPEN,
        },
    },
}
"""Frames a terminal may send in each state, and the state each leads to."""

TERMINAL_RECEIVES: dict[Transport, dict[TerminalState, dict[FrameType, TerminalState]]] = {
    Transport.TCP: {
        TerminalState.CONNECTED: {},
        TerminalState.AWAITING_WELCOME: {
            FrameType.WELCOME: TerminalState.OPEN,
            FrameType.NAK: TerminalState.CLOSED,
        },
        TerminalState.OPEN: {FrameType.ACK: TerminalState.OPEN, FrameType.NAK: TerminalState.OPEN},
        TerminalState.CLOSED: {},
    },
    Transport.MQTT: {
        TerminalState.OPEN: {FrameType.ACK: TerminalState.OPEN, FrameType.NAK: TerminalState.OPEN},
    },
}
"""Frames a terminal may expect in each state; anything else is a GatewayViolation."""


class NakAction(enum.Enum):
    """What a terminal does with the records of a NAKed frame (they always stay pending)."""

    RETRY = "retry"
    """BAD_CRC: the link corrupted it; send it again now."""
    RETRY_LATER = "retry_later"
    """BUSY: pause sending PRESSES (back off), then send it again."""
    STOP = "stop"
    """UNKNOWN_TERMINAL: the gateway does not know this terminal; stop."""
    FIRMWARE_BUG = "firmware_bug"
    """MALFORMED, BAD_TAG, UNSUPPORTED, NOT_HELLO: what was sent was wrong; report it."""


NAK_ACTIONS: dict[NakCode, NakAction] = {
    NakCode.BAD_CRC: NakAction.RETRY,
    NakCode.BUSY: NakAction.RETRY_LATER,
    NakCode.UNKNOWN_TERMINAL: NakAction.STOP,
    NakCode.MALFORMED: NakAction.FIRMWARE_BUG,
    NakCode.BAD_TAG: NakAction.FIRMWARE_BUG,
    NakCode.UNSUPPORTED: NakAction.FIRMWARE_BUG,
    NakCode.NOT_HELLO: NakAction.FIRMWARE_BUG,
}

CLOSING_NAKS = frozenset(
    {NakCode.BAD_TAG, NakCode.UNKNOWN_TERMINAL, NakCode.UNSUPPORTED, NakCode.NOT_HELLO}
)
"""NAKs after which the gateway closes a TCP connection (section 5)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A PRESSES or HEARTBEAT frame sent and not answered yet (TCP answers match in order)."""

    frame_type: FrameType
    first_seq: int
    last_seq: int
    at: float
    """When it was sent, in the caller's clock (for answer timeouts)."""

    @classmethod
    def of(cls, frame: Presses | Heartbeat, at: float = 0.0) -> Sent:
        if isinstance(frame, Presses):
            return cls(FrameType.PRESSES, frame.first_seq, frame.last_seq, at)
        return cls(FrameType.HEARTBEAT, 0, 0, at)

    @property
    def covered(self) -> int:
        """Records the frame carries (0 for HEARTBEAT)."""
        if self.frame_type is FrameType.PRESSES:
            return self.last_seq - self.first_seq + 1
        return 0

    @property
    def acked_seq(self) -> int:
        """The acked_seq its ACK must carry."""
        return self.last_seq if self.frame_type is FrameType.PRESSES else 0

    @property
    def ref_seq(self) -> int:
        """The ref_seq its NAK should carry."""
        return self.first_seq if self.frame_type is FrameType.PRESSES else 0

    def describe(self) -> str:
        if self.frame_type is FrameType.PRESSES:
            return f"PRESSES seq {self.first_seq}..{self.last_seq}"
        return self.frame_type.name


@dataclass(frozen=True, slots=True)
class Welcomed:
    welcome: Welcome


@dataclass(frozen=True, slots=True)
class Acked:
    """An ACK; on TCP ``sent`` is the frame it answers (checked to match), on MQTT None."""

    ack: Ack
    sent: Sent | None


@dataclass(frozen=True, slots=True)
class Naked:
    """A NAK and what to do about it; ``sent`` as for :class:`Acked` (None for a refused HELLO).

    ``problem`` notes a NAK whose ref_seq does not name the frame it answers: a
    gateway error worth reporting, not one that breaks the session.
    """

    nak: Nak
    sent: Sent | None
    action: NakAction
    problem: str | None = None

    @property
    def closes(self) -> bool:
        """Whether the gateway closes a TCP connection after this NAK."""
        return self.nak.code in CLOSING_NAKS


TerminalEvent = Welcomed | Acked | Naked


class TerminalSession:
    """A terminal's side of one session (sans-I/O): what it may send, what it may expect."""

    __slots__ = ("_in_flight", "_receives", "_sends", "_state", "terminal_id", "transport")

    def __init__(self, transport: Transport, terminal_id: int) -> None:
        self.transport = transport
        self.terminal_id = terminal_id
        self._sends = TERMINAL_SENDS[transport]
        self._receives = TERMINAL_RECEIVES[transport]
        self._state = TerminalState.CONNECTED if transport is Transport.TCP else TerminalState.OPEN
        self._in_flight: deque[Sent] = deque()

    @property
    def state(self) -> TerminalState:
        return self._state

    @property
    def in_flight(self) -> tuple[Sent, ...]:
        """TCP: frames sent and not answered, oldest first (MQTT keeps none: answers match
        by seq there, and may come after a reconnect)."""
        return tuple(self._in_flight)

    @property
    def oldest(self) -> Sent | None:
        return self._in_flight[0] if self._in_flight else None

    def send(self, frame: Frame, *, at: float = 0.0) -> Sent | None:
        """Check ``frame`` may be sent now; on TCP keep PRESSES and HEARTBEAT in flight.

        Raises :class:`~protocols.errors.NotHello` or
        :class:`~protocols.errors.NotAccepted`: a bug of the caller, not the gateway.
        """
        kind = frame_type(frame)
        after = self._sends[self._state].get(kind)
        if after is None:
            if self._state is TerminalState.CONNECTED:
                raise NotHello(f"{kind.name} before HELLO", terminal_id=frame.terminal_id)
            raise NotAccepted(
                f"a terminal does not send {kind.name} over {self.transport.name}"
                f" in state {self._state.name}",
                terminal_id=frame.terminal_id,
                frame_type=kind,
            )
        self._state = after
        if self.transport is Transport.TCP and isinstance(frame, Presses | Heartbeat):
            sent = Sent.of(frame, at)
            self._in_flight.append(sent)
            return sent
        return None

    def receive(self, event: Frame | DecodeError) -> TerminalEvent:
        """What an answer from the gateway means; GatewayViolation if it breaks the session."""
        if isinstance(event, DecodeError):
            raise self._violation(f"undecodable frame ({event.name}: {event.reason})")
        kind = frame_type(event)
        if event.terminal_id != self.terminal_id:
            raise self._violation(f"{kind.name} for terminal {event.terminal_id}")
        after = self._receives[self._state].get(kind)
        if after is None:
            if self._state is TerminalState.AWAITING_WELCOME:
                raise self._violation(f"{kind.name} instead of WELCOME")
            raise self._violation(f"{kind.name} where ACK or NAK was due")
        if isinstance(event, Welcome):
            self._state = after
            return Welcomed(event)
        if isinstance(event, Nak) and self._state is TerminalState.AWAITING_WELCOME:
            self._state = after
            return Naked(event, None, NAK_ACTIONS[event.code])
        assert isinstance(event, Ack | Nak)  # the table lets nothing else through
        sent = self._answered(event)
        if isinstance(event, Ack):
            self._check_ack(event, sent)
            self._state = after
            return Acked(event, sent)
        problem = None
        if sent is not None and event.ref_seq != sent.ref_seq:
            problem = f"NAK {event.code.name} ref_seq {event.ref_seq} for {sent.describe()}"
        # After a closing NAK the state stays OPEN: the close itself comes as EOF.
        self._state = after
        return Naked(event, sent, NAK_ACTIONS[event.code], problem)

    def _answered(self, answer: Ack | Nak) -> Sent | None:
        if self.transport is Transport.MQTT:
            return None
        if not self._in_flight:
            raise self._violation(f"{frame_type(answer).name} with no frame in flight")
        return self._in_flight.popleft()

    def _check_ack(self, ack: Ack, sent: Sent | None) -> None:
        if sent is not None:
            if ack.acked_type != sent.frame_type or ack.acked_seq != sent.acked_seq:
                # FIFO matching is lost: the session cannot go on.
                raise self._violation(
                    f"ACK type 0x{ack.acked_type:02x} seq {ack.acked_seq} for {sent.describe()}"
                )
            return
        if ack.acked_type == FrameType.HEARTBEAT:
            if ack.acked_seq != 0:
                raise self._violation(f"ACK of HEARTBEAT with acked_seq {ack.acked_seq}")
        elif ack.acked_type != FrameType.PRESSES:
            raise self._violation(f"ACK of type 0x{ack.acked_type:02x}")

    def _violation(self, detail: str) -> GatewayViolation:
        if self.transport is Transport.TCP:
            self._state = TerminalState.CLOSED
        return GatewayViolation(detail, terminal_id=self.terminal_id)
