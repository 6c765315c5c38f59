"""Errors of the terminal protocol codec.

Hierarchy::

    ProtocolError
    ├── EncodeError            the caller asked for a frame the spec cannot carry
    └── DecodeError            the peer sent bytes that break the spec (section 5)
        ├── BadMagic           no NAK; the stream cannot resync, close
        ├── FrameTooLong       no NAK; the stream cannot resync, close
        ├── UnsupportedVersion NAK UNSUPPORTED, close
        ├── BadCrc             NAK BAD_CRC, go on with the next frame
        ├── UnknownTerminal    NAK UNKNOWN_TERMINAL (zero tag), close
        ├── BadTag             NAK BAD_TAG, close
        ├── UnsupportedType    NAK UNSUPPORTED, close
        └── Malformed          NAK MALFORMED
"""

from __future__ import annotations

from protocols.constants import NakCode


class ProtocolError(Exception):
    """Base of every error raised by :mod:`protocols`."""


class EncodeError(ProtocolError):
    """A frame could not be encoded: a field is outside what the wire format carries."""


class DecodeError(ProtocolError):
    """The peer's bytes break the protocol; ``nak_code`` is what the gateway answers."""

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
