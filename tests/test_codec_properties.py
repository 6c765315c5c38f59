"""Property tests of the codec: round trips, robustness against any bytes, and each check."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocols import constants as c
from protocols.constants import FrameType, NakCode
from protocols.errors import (
    BadCrc,
    BadMagic,
    BadTag,
    DecodeError,
    EncodeError,
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
    crc16,
    decode,
    decode_header,
    encode,
    frame_type,
    tag,
)
from protocols.stream import FrameStream
from tests.support import KEYS, WRONG_KEY, keys, seal

U8 = 0xFF
U16 = 0xFFFF
U32 = 0xFFFFFFFF


def payload_of(raw: bytes) -> bytes:
    return raw[c.HEADER_SIZE : -(c.TAG_SIZE + c.CRC_SIZE)]


def reseal(raw: bytes, payload: bytes, key: bytes) -> bytes:
    """``raw`` with its payload replaced (length, tag and crc recomputed)."""
    header = decode_header(raw)
    return seal(header.frame_type, header.terminal_id, payload, key)


def patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


# ------------------------------------------------------------ strategies

u8 = st.integers(min_value=0, max_value=U8)
u16 = st.integers(min_value=0, max_value=U16)
u32 = st.integers(min_value=0, max_value=U32)
known_terminal = st.sampled_from(sorted(KEYS))

hellos = st.builds(
    Hello, terminal_id=known_terminal, fw_version=u16, boot_count=u32, clock=u32, flags=u16,
    queued=u16,
)  # fmt: skip


@st.composite
def presses(draw: st.DrawFn, min_count: int = 1, max_count: int = c.MAX_RECORDS) -> Presses:
    raw_records = draw(st.lists(st.tuples(u32, u8, u8), min_size=min_count, max_size=max_count))
    first_seq = draw(st.integers(min_value=0, max_value=U32 + 1 - len(raw_records)))
    records = tuple(
        PressRecord(first_seq + i, ts, button, followup)
        for i, (ts, button, followup) in enumerate(raw_records)
    )
    return Presses(draw(known_terminal), draw(u32), first_seq, draw(u16), records)


battery = st.one_of(st.integers(min_value=0, max_value=100), st.just(c.MAINS_POWERED))
heartbeats = st.builds(
    Heartbeat, terminal_id=known_terminal, clock=u32, battery_pct=battery,
    signal_dbm=st.integers(min_value=-128, max_value=127), queued=u16, uptime_s=u32,
)  # fmt: skip
hour_counts = st.tuples(u16, u16, u16, u16)
hourlies = st.builds(
    Hourly, terminal_id=known_terminal, batch_seq=u32,
    hour_start=st.integers(min_value=0, max_value=U32 // 3600).map(lambda h: h * 3600),
    counts=st.lists(hour_counts, min_size=1, max_size=c.MAX_HOURS).map(tuple),
)  # fmt: skip
welcomes = st.builds(Welcome, terminal_id=known_terminal, gateway_time=u32, next_seq=u32)
acks = st.builds(Ack, terminal_id=known_terminal, acked_type=u8, acked_seq=u32, gateway_time=u32)
naks = st.builds(Nak, terminal_id=known_terminal, code=st.sampled_from(NakCode), ref_seq=u32)
zero_tag_naks = st.builds(Nak, terminal_id=u32, code=st.just(NakCode.UNKNOWN_TERMINAL), ref_seq=u32)
any_frame: st.SearchStrategy[Frame] = st.one_of(
    hellos, presses(max_count=40), heartbeats, hourlies, welcomes, acks, naks
)


def wire(frame: Frame) -> bytes:
    return encode(frame, KEYS[frame.terminal_id])


ROUND_TRIP = settings(max_examples=60, deadline=None)
FUZZ = settings(max_examples=150, deadline=None)


# ------------------------------------------------------------ crc and tag


def crc16_reference(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1
    assert crc16_reference(b"123456789") == 0x29B1


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_crc16_is_ccitt_false(data: bytes) -> None:
    assert crc16(data) == crc16_reference(data)


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=200))
def test_tag_is_truncated_hmac_sha256(key: bytes, data: bytes) -> None:
    assert tag(key, data) == hmac.new(key, data, hashlib.sha256).digest()[:8]


# ------------------------------------------------------------ round trips


def assert_round_trip(frame: Frame) -> None:
    raw = wire(frame)
    assert len(raw) == c.OVERHEAD + int.from_bytes(raw[8:10], "big")
    assert raw[3] == frame_type(frame)
    assert decode(raw, keys) == frame
    assert FrameStream(keys).feed(raw) == [frame]


@ROUND_TRIP
@given(hellos)
def test_hello_round_trip(frame: Hello) -> None:
    assert_round_trip(frame)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(presses())
@example(Presses(1001, 0, U32, 0, (PressRecord(U32, 0, 4, 16),)))
@example(
    Presses(
        1002,
        U32,
        U32 + 1 - c.MAX_RECORDS,
        c.CLOCK_UNSYNCED,
        tuple(PressRecord(U32 + 1 - c.MAX_RECORDS + i, i, 5, 17) for i in range(c.MAX_RECORDS)),
    )
)
def test_presses_round_trip(frame: Presses) -> None:
    assert_round_trip(frame)
    assert 1 <= frame.count <= c.MAX_RECORDS


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(presses(min_count=c.MAX_RECORDS - 20))
def test_presses_round_trip_near_680(frame: Presses) -> None:
    assert_round_trip(frame)


@ROUND_TRIP
@given(heartbeats)
@example(Heartbeat(1001, 0, c.MAINS_POWERED, -128, 0, 0))
@example(Heartbeat(1001, U32, 100, -1, U16, U32))
def test_heartbeat_round_trip(frame: Heartbeat) -> None:
    assert_round_trip(frame)


@ROUND_TRIP
@given(hourlies)
@example(Hourly(1002, U32, (U32 // 3600) * 3600, ((U16, U16, U16, U16),) * c.MAX_HOURS))
@example(Hourly(1001, 0, 0, ((0, 0, 0, 0),)))
def test_hourly_round_trip(frame: Hourly) -> None:
    assert_round_trip(frame)


@ROUND_TRIP
@given(welcomes)
def test_welcome_round_trip(frame: Welcome) -> None:
    assert_round_trip(frame)


@ROUND_TRIP
@given(acks)
def test_ack_round_trip(frame: Ack) -> None:
    assert_round_trip(frame)


@ROUND_TRIP
@given(naks)
def test_nak_round_trip(frame: Nak) -> None:
    assert_round_trip(frame)
    assert isinstance(decode(wire(frame), keys), Nak)


@ROUND_TRIP
@given(zero_tag_naks)
def test_zero_tag_nak_round_trip(frame: Nak) -> None:
    raw = encode(frame, None)
    assert raw[-10:-2] == c.ZERO_TAG
    assert decode(raw, keys, zero_tag_naks=True) == frame
    assert FrameStream(keys, zero_tag_naks=True).feed(raw) == [frame]
    if frame.terminal_id not in KEYS:
        with pytest.raises(UnknownTerminal):
            decode(raw, keys)
    else:
        with pytest.raises(BadTag):
            decode(raw, keys)


# ------------------------------------------------------------ robustness


def decode_or_error(data: bytes) -> Frame | DecodeError:
    """decode(); anything but a frame or a DecodeError fails the test."""
    try:
        return decode(data, keys)
    except DecodeError as exc:
        error = exc
    assert isinstance(error.nak_code, NakCode | None)
    assert isinstance(error.raw, bytes)
    return error


FRAME_CLASSES = Hello | Presses | Heartbeat | Hourly | Welcome | Ack | Nak


def feed_all(data: bytes) -> None:
    for zero_tags in (False, True):
        stream = FrameStream(keys, zero_tag_naks=zero_tags)
        events = stream.feed(data)
        assert all(isinstance(e, DecodeError | FRAME_CLASSES) for e in events)
        assert stream.buffered <= c.MAX_FRAME


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    result = decode_or_error(data)
    assert isinstance(result, DecodeError)
    feed_all(data)


header_fields = st.fixed_dictionaries(
    {
        "magic": st.just(c.MAGIC),
        "version": st.just(c.VERSION),
        "type": st.one_of(st.sampled_from(FrameType), u8),
        "terminal_id": st.one_of(known_terminal, u32),
        "length": st.integers(min_value=0, max_value=300),
    }
)


@FUZZ
@given(header=header_fields, tail=st.binary(max_size=320))
def test_random_bytes_after_a_valid_header(header: dict[str, object], tail: bytes) -> None:
    data = HEADER.build(header) + tail
    result = decode_or_error(data)
    assert isinstance(result, DecodeError)
    feed_all(data)


@FUZZ
@given(
    kind=st.one_of(st.sampled_from(FrameType), u8),
    terminal_id=known_terminal,
    payload=st.binary(max_size=120),
)
def test_random_payload_correctly_sealed(kind: int, terminal_id: int, payload: bytes) -> None:
    """With a good crc and tag, only the payload check remains: a frame or its error."""
    data = seal(kind, terminal_id, payload, KEYS[terminal_id])
    result = decode_or_error(data)
    if isinstance(result, DecodeError):
        assert type(result) in {Malformed, UnsupportedType}
        assert result.frame_type == kind
        assert result.terminal_id == terminal_id
        if kind not in set(FrameType):
            assert isinstance(result, UnsupportedType)
    else:
        assert frame_type(result) == kind
        assert encode(result, KEYS[terminal_id]) == data
    feed_all(data)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A valid frame and a different byte string made from it."""
    raw = wire(draw(any_frame))
    how = draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if how == "flip":
        bits = draw(st.sets(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=6))
        out = bytearray(raw)
        for bit in bits:
            out[bit // 8] ^= 0x80 >> (bit % 8)
        return raw, bytes(out)
    if how == "truncate":
        return raw, raw[: draw(st.integers(0, len(raw) - 1))]
    if how == "extend":
        return raw, raw + draw(st.binary(min_size=1, max_size=40))
    at = draw(st.integers(0, len(raw) - 1))
    return raw, raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at + 1 :]


@FUZZ
@given(mutated())
def test_mutated_frames(pair: tuple[bytes, bytes]) -> None:
    raw, data = pair
    result = decode_or_error(data)
    if data != raw:
        assert isinstance(result, DecodeError)
    feed_all(data)
    feed_all(raw + data)


@FUZZ
@given(any_frame, st.data())
def test_truncation_and_extension_are_malformed(frame: Frame, data: st.DataObject) -> None:
    raw = wire(frame)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(Malformed):
        decode(raw[:cut], keys)
    extra = data.draw(st.binary(min_size=1, max_size=20))
    with pytest.raises(Malformed) as info:
        decode(raw + extra, keys)
    assert info.value.raw == raw + extra


@FUZZ
@given(any_frame, st.data())
def test_one_bit_flip_is_always_caught(frame: Frame, data: st.DataObject) -> None:
    raw = wire(frame)
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    out = bytearray(raw)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    byte = bit // 8
    with pytest.raises(DecodeError) as info:
        decode(bytes(out), keys)
    if byte < 2:
        assert isinstance(info.value, BadMagic)
    elif byte == 2:
        assert isinstance(info.value, UnsupportedVersion)
    elif byte in (8, 9):
        assert isinstance(info.value, Malformed | FrameTooLong)
    else:
        # CRC-16 catches every one-bit error in type, terminal_id, payload, tag and crc.
        assert isinstance(info.value, BadCrc)


# ------------------------------------------------------------ MALFORMED, per type

HELLO = Hello(1001, 0x0102, 7, 1767225600, 0, 3)
PRESSES = Presses(1001, 1767225662, 120, 0, (PressRecord(120, 1767225605, 4, 0),))
HEARTBEAT = Heartbeat(1001, 1767225690, 87, -71, 0, 3600)
HOURLY = Hourly(1002, 41, 1767254400, ((1, 0, 5, 12), (0, 2, 3, 9)))
WELCOME = Welcome(1001, 1767225601, 123)
ACK = Ack(1001, FrameType.PRESSES, 122, 1767225663)
NAK = Nak(1001, NakCode.MALFORMED, 120)
FIXED_SIZE: list[Frame] = [HELLO, HEARTBEAT, WELCOME, ACK, NAK]
ALL_TYPES: list[Frame] = [HELLO, PRESSES, HEARTBEAT, HOURLY, WELCOME, ACK, NAK]


def assert_malformed(data: bytes, frame: Frame, ref_seq: int = 0) -> Malformed:
    with pytest.raises(Malformed) as info:
        decode(data, keys)
    error = info.value
    assert error.nak_code is NakCode.MALFORMED
    assert error.closes is False
    assert error.terminal_id == frame.terminal_id
    assert error.frame_type == frame_type(frame)
    assert error.ref_seq == ref_seq
    assert error.raw == data
    return error


def test_valid_frame_plus_one_byte_is_malformed() -> None:
    for frame in ALL_TYPES:
        raw = wire(frame)
        assert decode(raw, keys) == frame
        ref_seq = PRESSES.first_seq if frame is PRESSES else 0
        assert_malformed(raw + b"\x00", frame, ref_seq)


@pytest.mark.parametrize("frame", FIXED_SIZE, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("delta", [-1, +1, "empty"])
def test_wrong_payload_size(frame: Frame, delta: int | str) -> None:
    raw = wire(frame)
    payload = payload_of(raw)
    if delta == "empty":
        payload = b""
    elif delta == -1:
        payload = payload[:-1]
    else:
        payload += b"\x00"
    assert_malformed(reseal(raw, payload, KEYS[frame.terminal_id]), frame)


@pytest.mark.parametrize("count", [0, c.MAX_RECORDS + 1, 2, U16])
def test_presses_bad_count(count: int) -> None:
    raw = wire(PRESSES)
    payload = patch(payload_of(raw), 8, count.to_bytes(2, "big"))
    error = assert_malformed(reseal(raw, payload, KEYS[1001]), PRESSES, ref_seq=120)
    assert "count" in error.reason


def test_presses_payload_shorter_than_its_head() -> None:
    raw = wire(PRESSES)
    assert_malformed(reseal(raw, payload_of(raw)[:11], KEYS[1001]), PRESSES, ref_seq=120)
    assert_malformed(reseal(raw, payload_of(raw)[:7], KEYS[1001]), PRESSES, ref_seq=0)


def test_presses_seq_overflow() -> None:
    frame = Presses(1001, 0, U32, 0, (PressRecord(U32, 1, 1, 0), PressRecord(U32 + 1, 1, 1, 0)))
    assert_malformed(wire(frame), frame, ref_seq=U32)


@pytest.mark.parametrize("n_hours", [0, c.MAX_HOURS + 1, 3, U8])
def test_hourly_bad_n_hours(n_hours: int) -> None:
    raw = wire(HOURLY)
    payload = patch(payload_of(raw), 8, bytes([n_hours]))
    error = assert_malformed(reseal(raw, payload, KEYS[1002]), HOURLY)
    assert "n_hours" in error.reason


def test_hourly_payload_shorter_than_its_head() -> None:
    raw = wire(HOURLY)
    assert_malformed(reseal(raw, payload_of(raw)[:8], KEYS[1002]), HOURLY)


@pytest.mark.parametrize("hour_start", [1, 3599, 3601, 1767254400 + 1800, U32])
def test_hourly_hour_start_not_a_multiple_of_3600(hour_start: int) -> None:
    frame = Hourly(1002, 41, hour_start, ((1, 2, 3, 4),))
    error = assert_malformed(wire(frame), frame)
    assert "hour_start" in error.reason


@pytest.mark.parametrize("battery_pct", [101, 200, 254])
def test_heartbeat_bad_battery(battery_pct: int) -> None:
    frame = Heartbeat(1001, 1767225690, battery_pct, -71, 0, 3600)
    error = assert_malformed(wire(frame), frame)
    assert "battery" in error.reason


@pytest.mark.parametrize("frame", [ACK, NAK], ids=lambda f: type(f).__name__)
def test_nonzero_reserved_byte(frame: Frame) -> None:
    raw = wire(frame)
    payload = patch(payload_of(raw), 1, b"\x01")
    assert_malformed(reseal(raw, payload, KEYS[1001]), frame)


@pytest.mark.parametrize("code", [0, 8, U8])
def test_unknown_nak_code(code: int) -> None:
    raw = wire(NAK)
    payload = patch(payload_of(raw), 0, bytes([code]))
    assert_malformed(reseal(raw, payload, KEYS[1001]), NAK)


# ------------------------------------------------------------ check order of section 2


def test_unsupported_type_correctly_tagged() -> None:
    data = seal(0x44, 1001, payload_of(wire(HELLO)), KEYS[1001])
    with pytest.raises(UnsupportedType) as info:
        decode(data, keys)
    error = info.value
    assert error.closes is True
    assert error.nak_code is NakCode.UNSUPPORTED
    assert error.frame_type == 0x44
    assert error.terminal_id == 1001


def test_unsupported_type_checked_after_terminal_and_tag() -> None:
    with pytest.raises(BadTag):
        decode(seal(0x44, 1001, b"", WRONG_KEY), keys)
    with pytest.raises(UnknownTerminal):
        decode(seal(0x44, 4242, b"", WRONG_KEY), keys)


def test_check_order() -> None:
    good = wire(HELLO)
    # crc before terminal known and tag
    unknown_bad_crc = bytearray(seal(FrameType.HELLO, 4242, payload_of(good), WRONG_KEY))
    unknown_bad_crc[-1] ^= 1
    with pytest.raises(BadCrc):
        decode(bytes(unknown_bad_crc), keys)
    # length before crc
    too_long = seal(FrameType.HELLO, 1001, b"", KEYS[1001], length=c.MAX_PAYLOAD + 1)
    with pytest.raises(FrameTooLong) as too_long_info:
        decode(too_long, keys)
    assert too_long_info.value.closes is True
    assert too_long_info.value.nak_code is None
    # version before length
    with pytest.raises(UnsupportedVersion):
        decode(seal(FrameType.HELLO, 1001, b"", KEYS[1001], version=0, length=U16), keys)
    # magic before version
    with pytest.raises(BadMagic):
        decode(b"MS" + good[2:], keys)
    # terminal known before tag, tag before payload
    with pytest.raises(UnknownTerminal):
        decode(seal(FrameType.HELLO, 4242, b"", WRONG_KEY), keys)
    with pytest.raises(BadTag):
        decode(seal(FrameType.HELLO, 1001, b"", WRONG_KEY), keys)


def test_closes_and_nak_codes() -> None:
    expected: dict[type[DecodeError], tuple[NakCode | None, bool]] = {
        BadMagic: (None, True),
        FrameTooLong: (None, True),
        UnsupportedVersion: (NakCode.UNSUPPORTED, True),
        BadCrc: (NakCode.BAD_CRC, False),
        UnknownTerminal: (NakCode.UNKNOWN_TERMINAL, True),
        BadTag: (NakCode.BAD_TAG, True),
        UnsupportedType: (NakCode.UNSUPPORTED, True),
        Malformed: (NakCode.MALFORMED, False),
    }
    for cls, (code, closes) in expected.items():
        error = cls("reason")
        assert (error.nak_code, error.closes) == (code, closes), cls.__name__


# ------------------------------------------------------------ encoding errors


@pytest.mark.parametrize("count", [0, c.MAX_RECORDS + 1])
def test_encode_presses_record_count(count: int) -> None:
    frame = Presses(1001, 0, 0, 0, tuple(PressRecord(i, 0, 1, 0) for i in range(count)))
    with pytest.raises(EncodeError):
        encode(frame, KEYS[1001])


@pytest.mark.parametrize("n_hours", [0, c.MAX_HOURS + 1])
def test_encode_hourly_hour_count(n_hours: int) -> None:
    frame = Hourly(1002, 0, 0, ((0, 0, 0, 0),) * n_hours)
    with pytest.raises(EncodeError):
        encode(frame, KEYS[1002])


@pytest.mark.parametrize(
    "frame",
    [
        HELLO,
        PRESSES,
        HEARTBEAT,
        HOURLY,
        WELCOME,
        ACK,
        NAK,
        Nak(1001, NakCode.BAD_TAG, 0),
    ],
    ids=lambda f: f"{type(f).__name__}-{getattr(f, 'code', '')}",
)
def test_encode_without_key_only_for_unknown_terminal_nak(frame: Frame) -> None:
    with pytest.raises(EncodeError):
        encode(frame, None)


@pytest.mark.parametrize(
    "frame",
    [
        Presses(1001, 0, 0, 0, (PressRecord(0, -1, 1, 0),)),
        Presses(1001, 0, 0, 0, (PressRecord(0, 0, 256, 0),)),
        Hourly(1002, 0, 0, ((U16 + 1, 0, 0, 0),)),
        Hello(U32 + 1, 0, 0, 0, 0, 0),
        Hello(1001, U16 + 1, 0, 0, 0, 0),
        Heartbeat(1001, 0, 87, 128, 0, 0),
        Heartbeat(1001, 0, 256, 0, 0, 0),
        Presses(1001, U32 + 1, 0, 0, PRESSES.records),
        Hourly(1002, -1, 0, ((0, 0, 0, 0),)),
        Ack(1001, 256, 0, 0),
        Welcome(1001, -1, 0),
        Nak(1001, NakCode.BUSY, U32 + 1),
    ],
    ids=repr,
)
def test_encode_out_of_range_field_is_encode_error(frame: Frame) -> None:
    with pytest.raises(EncodeError):
        encode(frame, KEYS.get(frame.terminal_id, WRONG_KEY))
