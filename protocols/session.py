"""The terminal session of spec section 4, sans-I/O: frames in, decisions out.

Two sides, each an explicit state and a transition table (h11's ``_state.py``
is the model):

Gateway side, :class:`GatewaySession`, one per TCP connection (one for all of
MQTT, where there is no connection per terminal)::

    TCP   AWAITING_HELLO --HELLO--> OPEN --HELLO, PRESSES, HEARTBEAT--> OPEN
          any other frame, or an error that closes --> CLOSED
    MQTT  OPEN --PRESSES, HEARTBEAT--> OPEN (never closes)

:meth:`GatewaySession.receive` takes a decoded frame or a
:class:`~protocols.errors.DecodeError` and returns :class:`Accept` (the
adapter commits, welcomes or records the heartbeat, then answers with
:func:`ack_for`, :func:`busy_for` or :func:`welcome_for`) or :class:`Refuse`
(quarantine ``error`` with reason ``error.name``, send ``nak`` if any, close
if ``close``). :meth:`GatewaySession.encode` tags an answer with the right key,
or with the zero tag where the spec says so.

The terminal's side (what a terminal may send and expect) is
:mod:`protocols.terminal_session`, on the same :class:`Transport` and
:data:`FROM_TERMINAL`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocols.constants import FrameType, NakCode
from protocols.errors import (
    DecodeError,
    NotAccepted,
    NotHello,
    PeerError,
    SessionViolation,
    TopicMismatch,
)
from protocols.frame_decoder import KeyLookup
from protocols.frame_encoder import encode
from protocols.frame_model import (
    Ack,
    Frame,
    Heartbeat,
    Hello,
    Nak,
    Presses,
    Welcome,
    frame_type,
)


class Transport(enum.Enum):
    TCP = "tcp"
    MQTT = "mqtt"


class CloseReason(enum.StrEnum):
    """Why a TCP connection ended; the value is what ``tcp_disconnected`` logs."""

    IDLE = "idle"
    """Silent for the idle timeout (section 4: 180 s)."""
    RESET = "reset"
    EOF = "eof"
    PROTOCOL_ERROR = "protocol_error"
    """The session refused a frame with close (section 5)."""
    SHUTDOWN = "shutdown"
    CLOSED = "closed"
    """Ended for none of the above (the serving task was cut short)."""


FROM_TERMINAL: dict[Transport, frozenset[FrameType]] = {
    Transport.TCP: frozenset({FrameType.HELLO, FrameType.PRESSES, FrameType.HEARTBEAT}),
    Transport.MQTT: frozenset({FrameType.PRESSES, FrameType.HEARTBEAT}),
}
"""Frame types a terminal may send over each transport (section 3)."""


# ---------------------------------------------------------------- gateway side


class GatewayState(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    OPEN = "open"
    CLOSED = "closed"


GATEWAY_TRANSITIONS: dict[Transport, dict[GatewayState, dict[FrameType, GatewayState]]] = {
    Transport.TCP: {
        GatewayState.AWAITING_HELLO: {FrameType.HELLO: GatewayState.OPEN},
        GatewayState.OPEN: {
            # A second HELLO gets a fresh WELCOME (docs/protocol-notes.md).
            FrameType.HELLO: GatewayState.OPEN,
            FrameType.PRESSES: GatewayState.OPEN,
            FrameType.HEARTBEAT: GatewayState.OPEN,
        },
        GatewayState.CLOSED: {},
    },
    Transport.MQTT: {
        GatewayState.OPEN: {
            FrameType.PRESSES: GatewayState.OPEN,
            FrameType.HEARTBEAT: GatewayState.OPEN,
        },
    },
}
"""Frames a gateway accepts in each state, and the state each leads to.

A frame not listed is a :class:`~protocols.errors.SessionViolation`:
:class:`~protocols.errors.NotHello` while awaiting HELLO, else
:class:`~protocols.errors.NotAccepted`. On TCP a violation closes (CLOSED).
"""

AcceptedFrame = Hello | Presses | Heartbeat


@dataclass(frozen=True, slots=True)
class Accept:
    """Take ``frame``: welcome a HELLO, commit PRESSES, record a HEARTBEAT; then answer it."""

    frame: AcceptedFrame


@dataclass(frozen=True, slots=True)
class Refuse:
    """Keep ``error`` in quarantine (reason ``error.name``); send ``nak`` if set; close if set."""

    error: PeerError
    nak: Nak | None
    close: bool

    @property
    def reason(self) -> str:
        return self.error.name


Decision = Accept | Refuse


class GatewaySession:
    """The gateway's side of one terminal session (sans-I/O)."""

    __slots__ = ("_keys", "_state", "_transitions", "terminal_id", "transport")

    def __init__(self, transport: Transport, keys: KeyLookup) -> None:
        self.transport = transport
        self._keys = keys
        self._transitions = GATEWAY_TRANSITIONS[transport]
        self._state = (
            GatewayState.AWAITING_HELLO if transport is Transport.TCP else GatewayState.OPEN
        )
        self.terminal_id: int | None = None
        """TCP: the terminal of the last HELLO; NAKs after it carry this id."""

    @property
    def state(self) -> GatewayState:
        return self._state

    def receive(
        self, event: Frame | DecodeError, *, raw: bytes = b"", topic_terminal: int | None = None
    ) -> Decision:
        """Decide on one frame or decoding error.

        ``raw`` is the frame's bytes where the adapter has them (MQTT); otherwise
        a violation keeps the frame re-encoded. ``topic_terminal`` is the id the
        MQTT topic names (None when it names none); it is ignored on TCP.
        """
        if self._state is GatewayState.CLOSED:
            raise RuntimeError("the session is closed; nothing more is read")
        if isinstance(event, DecodeError):
            return self._refuse_undecodable(event, topic_terminal)
        if self.transport is Transport.MQTT and topic_terminal != event.terminal_id:
            mismatch = TopicMismatch(
                f"topic names terminal {topic_terminal}, not {event.terminal_id}",
                raw=raw or self.encode(event),
                terminal_id=event.terminal_id,
                frame_type=frame_type(event),
            )
            return Refuse(mismatch, None, close=False)
        kind = frame_type(event)
        after = self._transitions[self._state].get(kind)
        if after is None or not isinstance(event, AcceptedFrame):
            return self._refuse_violation(event, kind, raw)
        self._state = after
        if isinstance(event, Hello):
            self.terminal_id = event.terminal_id
        return Accept(event)

    def _refuse_undecodable(self, error: DecodeError, topic_terminal: int | None) -> Refuse:
        code = error.nak_code
        if self.transport is Transport.MQTT:
            # Frames that cannot be tied to a known terminal get no answer (section 5).
            tied = error.terminal_id is not None and error.terminal_id == topic_terminal
            known = tied and self._keys(error.terminal_id or 0) is not None
            if not known or code is NakCode.UNKNOWN_TERMINAL:
                code = None
            return Refuse(error, self._nak(code, error.terminal_id, error.ref_seq), close=False)
        terminal_id = self.terminal_id
        if terminal_id is None or code is NakCode.UNKNOWN_TERMINAL:
            terminal_id = error.terminal_id
        return self._close_if(error.closes, error, self._nak(code, terminal_id, error.ref_seq))

    def _refuse_violation(self, frame: Frame, kind: FrameType, raw: bytes) -> Refuse:
        violation: SessionViolation
        terminal_id = frame.terminal_id
        raw = raw or self.encode(frame)
        if self._state is GatewayState.AWAITING_HELLO:
            ref_seq = frame.first_seq if isinstance(frame, Presses) else 0
            violation = NotHello(
                "first frame was not HELLO",
                raw=raw,
                terminal_id=terminal_id,
                frame_type=kind,
                ref_seq=ref_seq,
            )
        else:
            violation = NotAccepted(
                f"{type(frame).__name__} is not accepted from a terminal"
                f" over {self.transport.name}",
                raw=raw,
                terminal_id=terminal_id,
                frame_type=kind,
            )
            if self.terminal_id is not None:
                terminal_id = self.terminal_id
        nak = self._nak(violation.nak_code, terminal_id, violation.ref_seq)
        return self._close_if(self.transport is Transport.TCP, violation, nak)

    def _close_if(self, close: bool, error: PeerError, nak: Nak | None) -> Refuse:
        if close:
            self._state = GatewayState.CLOSED
        return Refuse(error, nak, close=close)

    @staticmethod
    def _nak(code: NakCode | None, terminal_id: int | None, ref_seq: int) -> Nak | None:
        if code is None or terminal_id is None:
            return None
        return Nak(terminal_id, code, ref_seq)

    def encode(self, frame: Frame) -> bytes:
        """``frame``'s bytes, tagged with its terminal's key, or the zero tag (section 2).

        A NAK about a frame whose header names an unregistered terminal (a BAD_CRC
        of a corrupt header) becomes NAK UNKNOWN_TERMINAL with the zero tag: there
        is no key to tag anything else with.
        """
        if isinstance(frame, Nak) and frame.code is NakCode.UNKNOWN_TERMINAL:
            return encode(frame, None)
        key = self._keys(frame.terminal_id)
        if key is None:
            return encode(Nak(frame.terminal_id, NakCode.UNKNOWN_TERMINAL, 0), None)
        return encode(frame, key)


def ack_for(frame: Presses | Heartbeat, gateway_time: int) -> Ack:
    """The ACK of a committed PRESSES (its last seq) or of a HEARTBEAT (seq 0)."""
    if isinstance(frame, Presses):
        return Ack(frame.terminal_id, FrameType.PRESSES, frame.last_seq, gateway_time)
    return Ack(frame.terminal_id, FrameType.HEARTBEAT, 0, gateway_time)


def busy_for(frame: Presses) -> Nak:
    """The NAK of a PRESSES frame the gateway cannot commit now."""
    return Nak(frame.terminal_id, NakCode.BUSY, frame.first_seq)


def welcome_for(hello: Hello, gateway_time: int, next_seq: int) -> Welcome:
    return Welcome(hello.terminal_id, gateway_time, next_seq)
