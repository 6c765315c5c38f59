"""From SMS-DELIVER PDUs to frames (spec section 4, SMS), with the spec's HOURLY vectors.

The frames travel in PDUs made by the test-local builder of ``tests.test_sms_pdu`` and
come back through the real decoder, so these tests run the whole pure SMS path.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from protocols.constants import FrameType, NakCode
from protocols.errors import (
    BadCrc,
    BadTag,
    InconsistentParts,
    Malformed,
    MissingParts,
    NotAFrame,
    SmsPartsError,
    UnsupportedType,
)
from protocols.frames import Hourly, decode
from protocols.sms_frame import (
    FRAME_OCTETS_PER_PART,
    PartKey,
    assemble,
    check_hourly_time,
    decode_hourly,
    frame_from_text,
    part_key,
    sent_at,
)
from protocols.sms_pdu import Alphabet, Concat, SmsDeliver
from tests.support import VECTOR_HEX, VECTORS, keys
from tests.test_sms_pdu import Pdu, binary_pdu, concat8, concat16, deliver, gsm

HOURLY = VECTOR_HEX["hourly"]
HOURLY_24H = VECTOR_HEX["hourly_24h"]
HOURLY_TEXT: str = next(v for v in VECTORS["vectors"] if v["name"] == "hourly_sms_text")["text"]

HELSINKI = timezone(timedelta(hours=2))
# "hourly": hours from 2026-01-01T08:00Z, three of them: the last starts at 10:00Z.
HOURLY_LAST = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
# "hourly_24h": hours from 2026-01-02T00:00Z, 24 of them: the last starts at 23:00Z.
HOURLY_24H_LAST = datetime(2026, 1, 2, 23, 0, tzinfo=UTC)
SENDER = "+358401234567"


def _fields(name: str) -> dict[str, Any]:
    fields: dict[str, Any] = next(v for v in VECTORS["vectors"] if v["name"] == name)["fields"]
    return fields


def expected_hourly(name: str) -> Hourly:
    f = _fields(name)
    counts = tuple((a, b, c, d) for a, b, c, d in f["counts"])
    return Hourly(f["terminal_id"], f["batch_seq"], f["hour_start"], counts)


# ------------------------------------------------------------ splitting a frame into PDUs


def binary_parts(
    frame: bytes,
    *,
    reference_bits: int = 8,
    reference: int = 0x2A,
    dcs: int = 0x04,
    when: datetime = HOURLY_24H_LAST + timedelta(minutes=1),
    force_concat: bool = False,
    sender: str = SENDER,
) -> list[SmsDeliver]:
    """The PDUs a terminal sends for ``frame`` in the binary form, decoded again."""
    if len(frame) <= 140 and not force_concat:
        return [deliver(binary_pdu(frame, dcs=dcs, when=when, sender=sender))]
    size = FRAME_OCTETS_PER_PART[reference_bits]
    chunks = [frame[i : i + size] for i in range(0, len(frame), size)]
    element = concat8 if reference_bits == 8 else concat16
    return [
        deliver(
            binary_pdu(
                chunk,
                dcs=dcs,
                udh=element(reference, len(chunks), i),
                when=when + timedelta(seconds=i),
                sender=sender,
            )
        )
        for i, chunk in enumerate(chunks, start=1)
    ]


def text_parts(
    text: str,
    *,
    ucs2: bool = False,
    reference: int = 0x07,
    when: datetime = HOURLY_24H_LAST + timedelta(minutes=1),
    sender: str = SENDER,
    sender_toa: int | None = None,
) -> list[SmsDeliver]:
    """The PDUs for ``text``: one SMS, or 153 septets (67 UCS2 characters) per part."""
    if ucs2:
        units = text.encode("utf-16-be")
        size = 134 if len(units) > 140 else 140
        chunks = [units[i : i + size] for i in range(0, len(units), size)]
    else:
        septets = gsm(text)
        size = 153 if len(septets) > 160 else 160
        chunks = [septets[i : i + size] for i in range(0, len(septets), size)]
    chunks = chunks or [b""]
    if len(chunks) == 1:
        udhs = [b""]
    else:
        udhs = [concat8(reference, len(chunks), i) for i in range(1, len(chunks) + 1)]
    return [
        deliver(
            Pdu(
                body=chunk,
                dcs=0x08 if ucs2 else 0x00,
                septets_form=not ucs2,
                udh=udh,
                when=when + timedelta(seconds=i),
                sender=sender,
                sender_toa=sender_toa,
            )
        )
        for i, (chunk, udh) in enumerate(zip(chunks, udhs, strict=True))
    ]


def sm1(frame: bytes) -> str:
    return "SM1 " + base64.b64encode(frame).decode("ascii")


# ------------------------------------------------------------ the spec's vectors


def test_text_vector_is_the_hourly_frame() -> None:
    assert sm1(HOURLY) == HOURLY_TEXT


@pytest.mark.parametrize("dcs", [0x04, 0xF4, 0xF5, 0x15])
def test_hourly_binary_single_sms(dcs: int) -> None:
    parts = binary_parts(HOURLY, dcs=dcs, when=HOURLY_LAST)
    assert len(parts) == 1
    assert part_key(parts[0]) is None
    assert assemble(parts) == HOURLY
    assert decode_hourly(parts, keys) == expected_hourly("hourly")


@pytest.mark.parametrize("ucs2", [False, True], ids=["gsm7", "ucs2"])
def test_hourly_text(ucs2: bool) -> None:
    """One SMS in GSM 7-bit; recoded to UCS2 its 80 characters need two parts."""
    parts = text_parts(HOURLY_TEXT, ucs2=ucs2, when=HOURLY_LAST)
    assert len(parts) == (2 if ucs2 else 1)
    assert {p.alphabet for p in parts} == {Alphabet.UCS2 if ucs2 else Alphabet.GSM7}
    assert "".join(p.text or "" for p in parts) == HOURLY_TEXT
    assert assemble(parts) == HOURLY
    assert decode_hourly(parts, keys) == expected_hourly("hourly")


def test_a_one_part_concatenated_sms_is_allowed() -> None:
    parts = binary_parts(HOURLY, force_concat=True, when=HOURLY_LAST)
    assert parts[0].concat == Concat(0x2A, 8, 1, 1)
    assert decode_hourly(parts, keys) == expected_hourly("hourly")


@pytest.mark.parametrize("reference_bits", [8, 16])
def test_hourly_24h_binary_in_two_parts_in_reverse_order(reference_bits: int) -> None:
    reference = 0xC3 if reference_bits == 8 else 0xC3A5
    parts = binary_parts(HOURLY_24H, reference_bits=reference_bits, reference=reference)
    size = FRAME_OCTETS_PER_PART[reference_bits]
    assert [len(p.user_data) for p in parts] == [size, len(HOURLY_24H) - size]
    assert {part_key(p) for p in parts} == {PartKey(SENDER, reference, reference_bits, 2)}
    reverse = list(reversed(parts))
    assert assemble(reverse) == HOURLY_24H
    assert decode_hourly(reverse, keys) == expected_hourly("hourly_24h")


@pytest.mark.parametrize("ucs2", [False, True], ids=["gsm7", "ucs2"])
def test_hourly_24h_text_in_parts_in_reverse_order(ucs2: bool) -> None:
    text = sm1(HOURLY_24H)
    assert len(text) == 300
    parts = text_parts(text, ucs2=ucs2)
    assert len(parts) == (5 if ucs2 else 2)
    assert all(p.concat is not None and p.concat.total == len(parts) for p in parts)
    reverse = list(reversed(parts))
    assert assemble(reverse) == HOURLY_24H
    assert decode_hourly(reverse, keys) == expected_hourly("hourly_24h")


@pytest.mark.parametrize(
    "layout",
    [
        lambda b64: "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)),
        lambda b64: "\r\n".join(b64[i : i + 60] for i in range(0, len(b64), 60)) + "\r\n",
        lambda b64: " ".join(b64[i : i + 4] for i in range(0, len(b64), 4)),
        lambda b64: "\n  " + b64[:10] + "\r" + b64[10:] + "  \n",
    ],
    ids=["lines-76", "crlf-60", "groups-of-4", "cr-and-edges"],
)
def test_white_space_in_the_base64_is_ignored(layout: Any) -> None:
    b64 = base64.b64encode(HOURLY_24H).decode("ascii")
    parts = text_parts("SM1 " + layout(b64))
    assert len(parts) >= 2
    assert assemble(parts[::-1]) == HOURLY_24H


def test_duplicates_are_tolerated() -> None:
    parts = binary_parts(HOURLY_24H)
    again = dataclasses.replace(parts[1], timestamp=parts[1].timestamp + timedelta(hours=20))
    assert assemble([parts[1], parts[0], again, parts[0]]) == HOURLY_24H
    single = binary_parts(HOURLY, when=HOURLY_LAST)
    assert assemble(single * 3) == HOURLY


# ------------------------------------------------------------ parts that do not fit


def test_same_index_with_other_content_is_inconsistent() -> None:
    parts = binary_parts(HOURLY_24H)
    other = dataclasses.replace(parts[1], user_data=parts[1].user_data[:-1] + b"\x00")
    with pytest.raises(InconsistentParts, match="part 2 came twice"):
        assemble([*parts, other])


def test_index_out_of_range_is_inconsistent() -> None:
    parts = binary_parts(HOURLY_24H)
    assert parts[1].concat is not None
    beyond = dataclasses.replace(parts[1], concat=dataclasses.replace(parts[1].concat, index=3))
    with pytest.raises(InconsistentParts, match="part 3 of a message of 2"):
        assemble([parts[0], beyond])
    zero = dataclasses.replace(parts[1], concat=dataclasses.replace(parts[1].concat, index=0))
    with pytest.raises(InconsistentParts, match="part 0 of a message of 2"):
        assemble([parts[0], zero])


def test_mixed_alphabets_are_inconsistent() -> None:
    parts = binary_parts(HOURLY_24H)
    recoded = dataclasses.replace(parts[1], alphabet=Alphabet.UCS2, dcs=0x08)
    with pytest.raises(InconsistentParts, match="different alphabets"):
        assemble([parts[0], recoded])


@pytest.mark.parametrize(
    "change",
    [
        {"sender": "+358409999999"},
        {"concat": Concat(0x2B, 8, 2, 2)},
        {"concat": Concat(0x2A, 16, 2, 2)},
        {"concat": Concat(0x2A, 8, 3, 2)},
        {"concat": None},
    ],
    ids=["sender", "reference", "reference-bits", "total", "not-concatenated"],
)
def test_mixed_keys_are_inconsistent(change: dict[str, Any]) -> None:
    parts = binary_parts(HOURLY_24H)
    with pytest.raises(InconsistentParts, match="different messages"):
        assemble([parts[0], dataclasses.replace(parts[1], **change)])


def test_two_different_single_messages_are_inconsistent() -> None:
    one = binary_parts(HOURLY, when=HOURLY_LAST)
    other = binary_parts(HOURLY[:-1] + b"\x00", when=HOURLY_LAST)
    with pytest.raises(InconsistentParts):
        assemble(one + other)


def test_missing_parts() -> None:
    parts = binary_parts(HOURLY_24H)
    with pytest.raises(MissingParts) as info:
        assemble(parts[:1])
    assert info.value.missing == (2,)
    assert isinstance(info.value, SmsPartsError)
    with pytest.raises(ValueError, match="at least one part"):
        assemble([])


# ------------------------------------------------------------ not a frame, or a broken one


@pytest.mark.parametrize(
    "text",
    [
        "Hello, who is this? Call me back",
        "Your balance is 5.00 \u20ac. Top up at *100#",
        "sm1 " + base64.b64encode(HOURLY).decode(),
        " SM1 " + base64.b64encode(HOURLY).decode(),
        "SM1" + base64.b64encode(HOURLY).decode(),
        "SM2 " + base64.b64encode(HOURLY).decode(),
        "",
    ],
)
def test_text_that_is_not_a_frame(text: str) -> None:
    when = datetime(2026, 1, 5, 9, 30, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))
    parts = text_parts(text, when=when, sender="Operator", sender_toa=0xD0)
    with pytest.raises(NotAFrame) as info:
        assemble(parts)
    assert (info.value.sender, info.value.sent_at, info.value.text) == ("Operator", when, text)
    assert info.value.data == gsm(text)


def test_a_person_texting_in_several_ucs2_parts() -> None:
    # 67 UTF-16 units per part: the pair of the first smiley is cut in two.
    text = "a" * 66 + "\U0001f600 Bonjour! " * 8
    parts = text_parts(text, ucs2=True, sender="+33612345678")
    assert len(parts) >= 2
    assert parts[0].text == "a" * 66 + "\\xd8\\x3d"
    assert parts[1].text is not None
    assert parts[1].text.startswith("\\xde\\x00 Bonjour!")
    with pytest.raises(NotAFrame) as info:
        assemble(parts[::-1])
    assert info.value.text == text
    assert info.value.sent_at == max(p.timestamp for p in parts)


def test_an_escape_split_across_gsm7_parts() -> None:
    text = "x" * 152 + "\u20ac and more"  # the euro's escape ends part 1, its 0x65 starts part 2
    parts = text_parts(text)
    assert parts[0].user_data.endswith(b"\x1b")
    assert parts[0].text is not None
    assert parts[0].text.endswith(" ")
    with pytest.raises(NotAFrame) as info:
        assemble(parts)
    assert info.value.text == text


@pytest.mark.parametrize(
    "data",
    [b"\x05\x04\x0b\x84\x23\xf0wap", b"S", b"", b"\x00SM\x01"],
    ids=["wap", "one-octet", "empty", "magic-later"],
)
def test_8bit_data_that_is_not_a_frame(data: bytes) -> None:
    parts = binary_parts(data, when=HOURLY_LAST)
    with pytest.raises(NotAFrame) as info:
        assemble(parts)
    assert info.value.text is None
    assert info.value.data == data
    assert info.value.sender == SENDER


def test_compressed_message_is_not_a_frame() -> None:
    part = deliver(binary_pdu(b"\x01\x02", dcs=0x24))
    assert part.compressed
    with pytest.raises(NotAFrame, match="compressed"):
        assemble([part])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SM1 ", "nothing after"),
        ("SM1 \n \n", "nothing after"),
        ("SM1 " + base64.b64encode(HOURLY).decode().rstrip("="), "base64"),
        ("SM1 " + base64.b64encode(HOURLY).decode() + "!", "base64"),
        ("SM1 " + base64.b64encode(HOURLY).decode().replace("+", "-"), "base64"),
        ("SM1 " + base64.b64encode(HOURLY).decode() + "AAAA", "base64"),  # data after "="
        ("SM1 " + base64.b64encode(HOURLY).decode()[:-4] + "=AAA", "base64"),
        ("SM1 \u00e9\u00e9\u00e9\u00e9", "base64"),
        (sm1(HOURLY[:70]) + sm1(HOURLY[70:]), "appears more than once"),
    ],
)
def test_frame_like_but_malformed_text(text: str, reason: str) -> None:
    with pytest.raises(Malformed, match=reason) as info:
        assemble(text_parts(text, when=HOURLY_LAST))
    assert info.value.nak_code is NakCode.MALFORMED
    assert info.value.raw == text.encode("utf-8")


def test_each_part_starting_with_sm1_is_malformed() -> None:
    b64 = base64.b64encode(HOURLY_24H).decode()
    halves = ["SM1 " + b64[:148], "SM1 " + b64[148:]]
    parts = [
        deliver(Pdu(body=gsm(half), udh=concat8(9, 2, i), when=HOURLY_24H_LAST))
        for i, half in enumerate(halves, start=1)
    ]
    with pytest.raises(Malformed, match="appears more than once"):
        assemble(parts)


@pytest.mark.parametrize("form", ["binary", "text"])
def test_bytes_after_the_frame_are_malformed(form: str) -> None:
    longer = HOURLY_24H + b"\x00"
    parts = binary_parts(longer) if form == "binary" else text_parts(sm1(longer))
    assert assemble(parts) == longer
    with pytest.raises(Malformed, match="frame of 222 bytes, header says 221"):
        decode_hourly(parts, keys)


def test_a_broken_frame_keeps_its_decode_error() -> None:
    broken = HOURLY[:-1] + bytes((HOURLY[-1] ^ 1,))
    with pytest.raises(BadCrc):
        decode_hourly(binary_parts(broken, when=HOURLY_LAST), keys)
    with pytest.raises(BadTag):
        decode_hourly(binary_parts(HOURLY, when=HOURLY_LAST), lambda _: bytes(16))


def test_other_frame_types_are_not_carried_by_sms() -> None:
    heartbeat = VECTOR_HEX["heartbeat"]
    assert decode(heartbeat, keys)
    with pytest.raises(UnsupportedType, match="not carried by SMS"):
        decode_hourly(binary_parts(heartbeat), keys)


# ------------------------------------------------------------ the service-centre time rule


def test_frame_from_text_directly() -> None:
    assert frame_from_text(HOURLY_TEXT, sender=SENDER, sent_at=HOURLY_LAST) == HOURLY


@pytest.mark.parametrize(
    ("when", "ok"),
    [
        (HOURLY_LAST, True),  # the last hour starts at the stamp: not after it
        (HOURLY_LAST.astimezone(HELSINKI), True),
        (HOURLY_LAST + timedelta(days=3), True),
        (HOURLY_LAST - timedelta(seconds=1), False),
        (HOURLY_LAST.astimezone(timezone(timedelta(hours=-5))) - timedelta(minutes=15), False),
    ],
)
def test_no_hour_may_start_after_the_timestamp(when: datetime, ok: bool) -> None:
    parts = binary_parts(HOURLY, when=when)
    if ok:
        assert decode_hourly(parts, keys) == expected_hourly("hourly")
        return
    with pytest.raises(Malformed, match="after the service-centre time stamp") as info:
        decode_hourly(parts, keys)
    assert info.value.terminal_id == 1002
    assert info.value.frame_type == FrameType.HOURLY
    assert info.value.raw == HOURLY


def test_the_latest_part_timestamp_counts() -> None:
    early = HOURLY_24H_LAST - timedelta(minutes=5)
    parts = binary_parts(HOURLY_24H, when=early)
    assert sent_at(parts) == early + timedelta(seconds=2)
    with pytest.raises(Malformed):
        decode_hourly(parts, keys)
    late = dataclasses.replace(parts[0], timestamp=HOURLY_24H_LAST.astimezone(HELSINKI))
    assert sent_at([parts[1], late]) == HOURLY_24H_LAST
    assert decode_hourly([parts[1], late], keys) == expected_hourly("hourly_24h")


def test_check_hourly_time_directly() -> None:
    frame = expected_hourly("hourly")
    check_hourly_time(frame, HOURLY_LAST)
    with pytest.raises(Malformed, match="after the service-centre"):
        check_hourly_time(frame, HOURLY_LAST - timedelta(seconds=1))
    odd = dataclasses.replace(frame, hour_start=frame.hour_start + 60)
    with pytest.raises(Malformed, match="not a multiple of 3600") as info:
        check_hourly_time(odd, HOURLY_LAST + timedelta(hours=1))
    assert info.value.nak_code is NakCode.MALFORMED
    with pytest.raises(ValueError, match="timezone-aware"):
        check_hourly_time(frame, HOURLY_LAST.replace(tzinfo=None))


def test_part_key() -> None:
    single = binary_parts(HOURLY, when=HOURLY_LAST)[0]
    assert part_key(single) is None
    first = binary_parts(HOURLY_24H, reference_bits=16, reference=0xBEEF)[0]
    assert part_key(first) == PartKey(SENDER, 0xBEEF, 16, 2)


def _all_parts(parts: Sequence[SmsDeliver]) -> bytes:
    return b"".join(p.user_data for p in parts)


def test_binary_parts_fill_their_sms() -> None:
    """134 frame octets per part with an 8-bit reference, 133 with 16: 140 with the header."""
    for bits in (8, 16):
        parts = binary_parts(HOURLY_24H, reference_bits=bits)
        assert _all_parts(parts) == HOURLY_24H
        header = 6 if bits == 8 else 7
        assert len(parts[0].user_data) + header == 140
