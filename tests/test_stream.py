"""FrameStream, the incremental TCP decoder: any split of the bytes gives the same events."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import constants as c
from protocols.constants import FrameType, NakCode
from protocols.errors import (
    BadCrc,
    BadMagic,
    BadTag,
    DecodeError,
    FrameTooLong,
    Malformed,
    UnknownTerminal,
    UnsupportedType,
    UnsupportedVersion,
)
from protocols.frames import (
    HEADER,
    Ack,
    Frame,
    Heartbeat,
    Hello,
    Hourly,
    Nak,
    Presses,
    PressRecord,
    Welcome,
    encode,
)
from protocols.stream import Event, FrameStream
from tests.support import KEYS, WRONG_KEY, keys, seal


def records(first_seq: int, count: int) -> tuple[PressRecord, ...]:
    return tuple(
        PressRecord(first_seq + i, 1767225600 + i, 1 + i % 4, i % 17) for i in range(count)
    )


FRAMES: list[Frame] = [
    Hello(1001, fw_version=0x0102, boot_count=7, clock=1767225600, flags=0, queued=3),
    Presses(1001, sent_at=1767225662, first_seq=120, flags=0, records=records(120, 3)),
    Heartbeat(1001, clock=1767225690, battery_pct=87, signal_dbm=-71, queued=0, uptime_s=3600),
    Presses(1002, sent_at=1767225700, first_seq=0, flags=1, records=records(0, c.MAX_RECORDS)),
    Hourly(1002, batch_seq=41, hour_start=1767254400, counts=((1, 0, 5, 12), (0, 2, 3, 9))),
    Welcome(1001, gateway_time=1767225601, next_seq=123),
    Ack(1001, acked_type=FrameType.PRESSES, acked_seq=122, gateway_time=1767225663),
    Nak(1001, code=NakCode.BUSY, ref_seq=120),
    Heartbeat(1002, clock=1, battery_pct=c.MAINS_POWERED, signal_dbm=0, queued=7, uptime_s=9),
]
WIRE = b"".join(encode(f, KEYS[f.terminal_id]) for f in FRAMES)

HELLO_1001 = encode(FRAMES[0], KEYS[1001])
PRESSES_1001 = encode(FRAMES[1], KEYS[1001])
HEARTBEAT_1001 = encode(FRAMES[2], KEYS[1001])


def feed_chunks(stream: FrameStream, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += stream.feed(chunk)
        assert stream.buffered <= c.MAX_FRAME
    return events


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def assert_closed(stream: FrameStream) -> None:
    assert stream.closed
    assert stream.buffered == 0
    assert stream.feed(HELLO_1001) == []
    assert stream.feed(b"anything at all") == []
    assert stream.buffered == 0


# ------------------------------------------------------------ three ways to feed


def test_all_at_once() -> None:
    stream = FrameStream(keys)
    assert stream.feed(WIRE) == FRAMES
    assert stream.buffered == 0
    assert not stream.closed


def test_one_byte_at_a_time() -> None:
    stream = FrameStream(keys)
    events: list[Event] = []
    done = 0
    for i in range(len(WIRE)):
        new = stream.feed(WIRE[i : i + 1])
        events += new
        if new:
            done = i + 1
        # Nothing is emitted early and all the bytes since the last frame are held.
        assert stream.buffered == i + 1 - done
    assert events == FRAMES
    assert stream.buffered == 0


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(WIRE)), max_size=40))
def test_random_splits(cuts: list[int]) -> None:
    stream = FrameStream(keys)
    assert feed_chunks(stream, split_at(WIRE, cuts)) == FRAMES
    assert stream.buffered == 0
    assert not stream.closed


def test_empty_feed_is_harmless() -> None:
    stream = FrameStream(keys)
    assert stream.feed(b"") == []
    assert stream.feed(HELLO_1001[:5]) == []
    assert stream.feed(b"") == []
    assert stream.feed(HELLO_1001[5:]) == [FRAMES[0]]


def test_zero_tag_nak_on_the_terminal_side() -> None:
    nak = Nak(4242, code=NakCode.UNKNOWN_TERMINAL, ref_seq=0)
    raw = encode(nak, None)
    terminal = FrameStream(keys, zero_tag_naks=True)
    assert terminal.feed(raw) == [nak]
    assert not terminal.closed
    gateway = FrameStream(keys)
    [event] = gateway.feed(raw)
    assert isinstance(event, UnknownTerminal)
    assert_closed(gateway)


# ------------------------------------------------------------ garbage and errors


GARBAGE = b"\x00garbage after the frames" * 3


@pytest.mark.parametrize("chunk_size", [1, 7, len(WIRE) + len(GARBAGE)])
def test_trailing_garbage_closes_after_the_frames(chunk_size: int) -> None:
    data = WIRE + GARBAGE
    stream = FrameStream(keys)
    events = feed_chunks(
        stream, [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    )
    assert events[: len(FRAMES)] == FRAMES
    assert len(events) == len(FRAMES) + 1
    error = events[-1]
    assert isinstance(error, BadMagic)
    assert error.closes
    assert error.nak_code is None
    assert_closed(stream)


@settings(max_examples=60, deadline=None)
@given(
    garbage=st.binary(min_size=1, max_size=64).filter(lambda g: g[0] != c.MAGIC[0]),
    cut=st.integers(min_value=0, max_value=len(WIRE)),
)
def test_any_trailing_garbage_closes(garbage: bytes, cut: int) -> None:
    stream = FrameStream(keys)
    events = feed_chunks(stream, split_at(WIRE + garbage, [cut]))
    assert events[:-1] == FRAMES
    assert isinstance(events[-1], BadMagic)
    assert_closed(stream)


def test_wrong_second_magic_byte_closes_without_waiting_for_a_header() -> None:
    stream = FrameStream(keys)
    assert stream.feed(b"S") == []
    [error] = stream.feed(b"X")
    assert isinstance(error, BadMagic)
    assert_closed(stream)


def test_bad_crc_between_good_frames_is_skipped() -> None:
    bad = bytearray(PRESSES_1001)
    bad[-1] ^= 0x01
    stream = FrameStream(keys)
    first, error, last = stream.feed(HELLO_1001 + bytes(bad) + HEARTBEAT_1001)
    assert first == FRAMES[0]
    assert isinstance(error, BadCrc)
    assert error.nak_code is NakCode.BAD_CRC
    assert not error.closes
    assert error.raw == bytes(bad)
    assert error.terminal_id == 1001
    assert error.frame_type == FrameType.PRESSES
    assert error.ref_seq == 120  # first_seq of the refused PRESSES
    assert last == FRAMES[2]
    assert not stream.closed
    assert stream.buffered == 0


def test_bad_crc_byte_at_a_time() -> None:
    bad = bytearray(HEARTBEAT_1001)
    bad[12] ^= 0x80  # payload byte: crc no longer matches
    data = HELLO_1001 + bytes(bad) + HEARTBEAT_1001
    stream = FrameStream(keys)
    events = feed_chunks(stream, [data[i : i + 1] for i in range(len(data))])
    assert len(events) == 3
    assert events[0] == FRAMES[0]
    assert isinstance(events[1], BadCrc)
    assert events[2] == FRAMES[2]
    assert not stream.closed


def test_length_over_4096_closes_at_the_header() -> None:
    head = HEADER.build(
        {
            "magic": c.MAGIC,
            "version": c.VERSION,
            "type": FrameType.PRESSES,
            "terminal_id": 1001,
            "length": c.MAX_PAYLOAD + 1,
        }
    )
    stream = FrameStream(keys)
    assert stream.feed(HELLO_1001 + head[:-1]) == [FRAMES[0]]
    # The error comes as soon as the header is complete, without waiting for 4097 bytes.
    [error] = stream.feed(head[-1:])
    assert isinstance(error, FrameTooLong)
    assert error.closes
    assert error.nak_code is None
    assert_closed(stream)


def test_length_4096_is_accepted_by_the_stream() -> None:
    # A HELLO with a 4096-byte payload: the largest frame; MALFORMED, not fatal.
    big = seal(FrameType.HELLO, 1001, bytes(c.MAX_PAYLOAD), KEYS[1001])
    assert len(big) == c.MAX_FRAME
    stream = FrameStream(keys)
    assert stream.feed(big[:-1]) == []
    assert stream.buffered == c.MAX_FRAME - 1
    [error] = stream.feed(big[-1:])
    assert isinstance(error, Malformed)
    assert not stream.closed
    assert stream.feed(HELLO_1001) == [FRAMES[0]]


def test_unknown_terminal_closes() -> None:
    stranger = encode(Hello(9999, 1, 1, 1, 0, 0), WRONG_KEY)
    stream = FrameStream(keys)
    events = stream.feed(HELLO_1001 + stranger + HEARTBEAT_1001)
    assert len(events) == 2
    assert events[0] == FRAMES[0]
    error = events[1]
    assert isinstance(error, UnknownTerminal)
    assert error.nak_code is NakCode.UNKNOWN_TERMINAL
    assert error.closes
    assert error.terminal_id == 9999
    assert_closed(stream)


def test_bad_tag_closes() -> None:
    forged = encode(FRAMES[1], WRONG_KEY)
    stream = FrameStream(keys)
    events = stream.feed(HELLO_1001 + forged + HEARTBEAT_1001)
    assert len(events) == 2
    assert events[0] == FRAMES[0]
    error = events[1]
    assert isinstance(error, BadTag)
    assert error.nak_code is NakCode.BAD_TAG
    assert error.closes
    assert error.ref_seq == 120
    assert_closed(stream)


def test_unsupported_version_closes_at_the_header() -> None:
    v2 = seal(FrameType.HELLO, 1001, bytes(14), KEYS[1001], version=2)
    stream = FrameStream(keys)
    assert stream.feed(HELLO_1001 + v2[:9]) == [FRAMES[0]]
    [error] = stream.feed(v2[9:10])
    assert isinstance(error, UnsupportedVersion)
    assert error.nak_code is NakCode.UNSUPPORTED
    assert error.closes
    assert_closed(stream)


def test_unsupported_type_closes() -> None:
    odd = seal(0x44, 1001, b"\x00" * 4, KEYS[1001])
    stream = FrameStream(keys)
    events = stream.feed(odd + HELLO_1001)
    assert len(events) == 1
    assert isinstance(events[0], UnsupportedType)
    assert events[0].closes
    assert_closed(stream)


def test_malformed_does_not_close() -> None:
    short = seal(FrameType.HEARTBEAT, 1001, bytes(11), KEYS[1001])
    stream = FrameStream(keys)
    events = stream.feed(short + HELLO_1001)
    assert len(events) == 2
    assert isinstance(events[0], Malformed)
    assert not events[0].closes
    assert events[1] == FRAMES[0]
    assert not stream.closed


def test_closing_error_keeps_the_refused_frame_as_raw() -> None:
    forged = encode(FRAMES[2], WRONG_KEY)
    stream = FrameStream(keys)
    [error] = stream.feed(forged + HELLO_1001 * 3)
    assert isinstance(error, BadTag)
    assert error.raw == forged


# ------------------------------------------------------------ bounded buffer


@settings(max_examples=40, deadline=None)
@given(
    chunk_sizes=st.lists(st.integers(min_value=1, max_value=c.MAX_FRAME), min_size=1, max_size=30),
    repeat=st.integers(min_value=1, max_value=4),
)
def test_buffer_stays_bounded(chunk_sizes: list[int], repeat: int) -> None:
    big = seal(FrameType.HELLO, 1001, bytes(c.MAX_PAYLOAD), KEYS[1001])
    data = (WIRE + big) * repeat
    stream = FrameStream(keys)
    chunks: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        size = chunk_sizes[i % len(chunk_sizes)]
        chunks.append(data[pos : pos + size])
        pos += size
        i += 1
    events = feed_chunks(stream, chunks)  # asserts buffered <= MAX_FRAME after every feed
    assert len(events) == (len(FRAMES) + 1) * repeat
    assert stream.buffered == 0


@settings(max_examples=40, deadline=None)
@given(
    tail=st.binary(min_size=1, max_size=3 * c.MAX_FRAME),
    chunk=st.integers(min_value=1, max_value=c.MAX_FRAME),
)
def test_buffer_bounded_for_any_bytes_after_a_header(tail: bytes, chunk: int) -> None:
    # A valid header (any length up to 4096) followed by arbitrary bytes.
    head = HEADER.build(
        {
            "magic": c.MAGIC,
            "version": c.VERSION,
            "type": FrameType.PRESSES,
            "terminal_id": 1001,
            "length": int.from_bytes(tail[:2].ljust(2, b"\0"), "big") % (c.MAX_PAYLOAD + 1),
        }
    )
    data = head + tail
    stream = FrameStream(keys)
    events = feed_chunks(stream, [data[i : i + chunk] for i in range(0, len(data), chunk)])
    assert all(isinstance(e, DecodeError) for e in events)
    if stream.closed:
        assert stream.buffered == 0
