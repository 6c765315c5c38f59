"""Errors of the terminal protocol codec.

Hierarchy::

    ProtocolError
    ├── EncodeError                the caller asked for a frame the spec cannot carry
    ├── PeerError                  a peer's input is refused: kept in quarantine, maybe NAKed
    │   ├── DecodeError            the peer sent bytes that break the spec (section 5)
    │   │   ├── BadMagic           no NAK; the stream cannot resync, close
    │   │   ├── FrameTooLong       no NAK; the stream cannot resync, close
    │   │   ├── Truncated          no NAK; a frame cut short by the close of the connection
    │   │   ├── UnsupportedVersion NAK UNSUPPORTED, close
    │   │   ├── BadCrc             NAK BAD_CRC, go on with the next frame
    │   │   ├── UnknownTerminal    NAK UNKNOWN_TERMINAL (zero tag), close
    │   │   ├── BadTag             NAK BAD_TAG, close
    │   │   ├── UnsupportedType    NAK UNSUPPORTED, close
    │   │   └── Malformed          NAK MALFORMED; on SMS also a frame-like message that
    │   │                          breaks the frame (bad base64 after ``SM1 ``, bytes
    │   │                          after the frame, an hour after the SC timestamp)
    │   ├── BadProxyHeader         (protocols/proxy_protocol.py) a connection behind a load
    │   │                          balancer did not start with a PROXY header: no NAK, close
    │   └── SessionViolation       a genuine frame that breaks the session (section 4):
    │       ├── NotHello           on TCP a frame other than HELLO came first: NAK, close
    │       ├── NotAccepted        a type not taken from a terminal on this transport:
    │       │                      NAK UNSUPPORTED (and close, on TCP)
    │       ├── TopicMismatch      MQTT: the topic names another terminal; no NAK
    │       └── GatewayViolation   terminal side: the gateway's answer breaks the session
    ├── SmsDecodeError             an SMS PDU that breaks 3GPP TS 23.040 (short, inconsistent)
    ├── NotAFrame                  an SMS that is no frame at all (a person's text, an
    │                              operator notice): quarantine with sender, time, text
    └── SmsPartsError              the parts given for one SMS do not make one message
        ├── InconsistentParts      parts contradict each other (keys, alphabets, contents)
        └── MissingParts           some parts of a concatenated SMS are not there (yet)

Whether a ``SessionViolation`` closes the connection depends on the transport
(there is none to close on MQTT): :mod:`protocols.session` decides.

``EncodeError``, ``SmsDecodeError``, ``NotAFrame`` and ``SmsPartsError`` hang
directly off ``ProtocolError``: they carry no NAK code, because nothing is ever
sent back by SMS (spec section 4).
"""

from __future__ import annotations

from datetime import datetime

from protocols.constants import NakCode


class ProtocolError(Exception):
    """Base of every error raised by :mod:`protocols`."""


class EncodeError(ProtocolError):
    """A frame could not be encoded: a field is outside what the wire format carries."""


class PeerError(ProtocolError):
    """Something a peer sent is refused; ``nak_code`` is what the gateway answers, if anything.

    Carries what the quarantine row keeps: the raw bytes, the terminal id the
    input names (None when it names none), the frame type byte and the seq a
    NAK refers to.
    """

    nak_code: NakCode | None = None
    closes: bool = False

    def __init__(
        self,
        reason: str,
        *,
        raw: bytes = b"",
        terminal_id: int | None = None,
        frame_type: int | None = None,
        ref_seq: int = 0,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
        self.terminal_id = terminal_id
        self.frame_type = frame_type
        self.ref_seq = ref_seq

    @property
    def name(self) -> str:
        """Short machine-readable name, used in quarantine and logs."""
        return self.nak_code.name if self.nak_code is not None else type(self).__name__


class DecodeError(PeerError):
    """The peer's bytes break the protocol; ``nak_code`` is what the gateway answers."""


class BadMagic(DecodeError):
    closes = True

    @property
    def name(self) -> str:
        return "BAD_MAGIC"


class FrameTooLong(DecodeError):
    closes = True

    @property
    def name(self) -> str:
        return "TOO_LONG"


class Truncated(DecodeError):
    """The connection closed (EOF or reset) inside a frame: a header or body cut short."""

    closes = True

    @property
    def name(self) -> str:
        return "TRUNCATED"


class UnsupportedVersion(DecodeError):
    nak_code = NakCode.UNSUPPORTED
    closes = True


class BadCrc(DecodeError):
    nak_code = NakCode.BAD_CRC


class UnknownTerminal(DecodeError):
    nak_code = NakCode.UNKNOWN_TERMINAL
    closes = True


class BadTag(DecodeError):
    nak_code = NakCode.BAD_TAG
    closes = True


class UnsupportedType(DecodeError):
    nak_code = NakCode.UNSUPPORTED
    closes = True


class Malformed(DecodeError):
    nak_code = NakCode.MALFORMED


class SessionViolation(PeerError):
    """A frame that decodes but breaks the session rules of spec section 4."""


class NotHello(SessionViolation):
    """On TCP, a frame other than HELLO came first."""

    nak_code = NakCode.NOT_HELLO
    closes = True


class NotAccepted(SessionViolation):
    """A frame type the gateway does not take from a terminal over this transport."""

    nak_code = NakCode.UNSUPPORTED


class TopicMismatch(SessionViolation):
    """On MQTT, the topic names another terminal than the frame: nothing is sent back."""

    @property
    def name(self) -> str:
        return "TOPIC_MISMATCH"


class GatewayViolation(SessionViolation):
    """Terminal side: what the gateway sent breaks the session (a firmware would log it)."""

    @property
    def name(self) -> str:
        return "GATEWAY_VIOLATION"


class SmsDecodeError(ProtocolError):
    """An SMS PDU is short or inconsistent (3GPP TS 23.040); ``reason`` says where."""

    def __init__(self, reason: str, *, raw: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class NotAFrame(ProtocolError):
    """An SMS that does not even look like a frame: keep it in quarantine as it is.

    ``text`` is the decoded text (None for 8-bit data), ``data`` the joined user
    data (the septets of GSM 7-bit, the octets otherwise), ``sent_at`` the latest
    service-centre timestamp of its parts.
    """

    def __init__(
        self,
        reason: str,
        *,
        sender: str,
        sent_at: datetime,
        text: str | None,
        data: bytes = b"",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sender = sender
        self.sent_at = sent_at
        self.text = text
        self.data = data


class SmsPartsError(ProtocolError):
    """The parts handed over for one SMS do not make one message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InconsistentParts(SmsPartsError):
    """Parts contradict each other: other keys, alphabets, or one index with two contents."""


class MissingParts(SmsPartsError):
    """Parts of a concatenated SMS are missing; ``missing`` lists their 1-based indexes."""

    def __init__(self, reason: str, *, missing: tuple[int, ...] = ()) -> None:
        super().__init__(reason)
        self.missing = missing
