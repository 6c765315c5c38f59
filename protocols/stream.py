"""Stream decoder for TCP: bytes in any split, frames and errors out.

The buffer never holds more than one frame (at most 4116 bytes) beyond the
chunk being fed. After an error that closes the connection (bad magic, length
over 4096, unsupported version, unknown terminal, bad tag, unknown type) the
decoder stops: there is no way to find the next frame, and the spec says close.
A bad crc skips exactly that frame, as the header's length says (section 5).

When the connection ends, :meth:`FrameStream.end` turns what is left of a
frame cut short (a header, or a header and part of its body) into a
:class:`~protocols.errors.Truncated` error with those bytes, so that nothing a
terminal sent vanishes unrecorded (section 5).
"""

from __future__ import annotations

from protocols import constants as c
from protocols.errors import DecodeError, Truncated
from protocols.frame_decoder import KeyLookup, decode, decode_header, guess_ref_seq
from protocols.frame_model import Frame

Event = Frame | DecodeError


class FrameStream:
    """Incremental decoder of a byte stream of frames (sans-I/O)."""

    __slots__ = ("_buffer", "_closed", "_keys", "_zero_tag_naks")

    def __init__(self, keys: KeyLookup, *, zero_tag_naks: bool = False) -> None:
        self._keys = keys
        self._zero_tag_naks = zero_tag_naks
        self._buffer = bytearray()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once an error left no way to find the next frame."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes held that do not make a whole frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        """Append ``data``; return every frame or error it completes, in order."""
        if self._closed:
            return []
        self._buffer += data
        events: list[Event] = []
        while not self._closed:
            event = self._next()
            if event is None:
                break
            events.append(event)
        return events

    def end(self) -> Truncated | None:
        """The connection closed: the frame cut short in the buffer, if any, as an error.

        Its ``raw`` is every byte held, exactly as received. The stream takes no
        more bytes afterwards.
        """
        if self._closed or not self._buffer:
            self._closed = True
            return None
        raw = bytes(self._buffer)
        self._closed = True
        self._buffer.clear()
        if len(raw) < c.HEADER_SIZE:
            # Only a prefix of the magic can be held here: a wrong byte is fatal at once.
            return Truncated(f"connection closed after {len(raw)} bytes of a header", raw=raw)
        header = decode_header(raw)  # it decoded when it came in, or the stream had closed
        return Truncated(
            f"connection closed after {len(raw)} of the frame's {header.frame_size} bytes",
            raw=raw,
            terminal_id=header.terminal_id,
            frame_type=int(header.frame_type),
            ref_seq=guess_ref_seq(header, raw),
        )

    def _next(self) -> Event | None:
        buf = self._buffer
        if len(buf) < c.HEADER_SIZE:
            # A wrong first byte is already fatal; no need to wait for a header.
            if buf[:2] and bytes(buf[:2]) != c.MAGIC[: len(buf[:2])]:
                return self._fatal_header()
            return None
        try:
            header = decode_header(bytes(buf[: c.HEADER_SIZE]))
        except DecodeError as exc:
            return self._close_with(exc)
        size = header.frame_size
        if len(buf) < size:
            return None
        raw = bytes(buf[:size])
        del buf[:size]
        try:
            return decode(raw, self._keys, zero_tag_naks=self._zero_tag_naks)
        except DecodeError as exc:
            if exc.closes:
                self._closed = True
                self._buffer.clear()
            return exc

    def _fatal_header(self) -> DecodeError:
        padded = bytes(self._buffer[: c.HEADER_SIZE]).ljust(c.HEADER_SIZE, b"\0")
        try:
            decode_header(padded)
        except DecodeError as exc:
            return self._close_with(exc)
        raise AssertionError("a header with bad magic decoded")  # pragma: no cover

    def _close_with(self, exc: DecodeError) -> DecodeError:
        """Stop at a header no frame can follow; keep the unreadable bytes (bounded)."""
        exc.raw = bytes(self._buffer[: c.MAX_FRAME])
        self._closed = True
        self._buffer.clear()
        return exc
