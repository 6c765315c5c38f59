"""SMS-SUBMIT encoding (protocols.sms_submit) and TP-ST outcomes, read back by a
decoder written here from TS 23.040 9.2.2.2, apart from the encoder."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from datetime import timedelta

import gsm0338  # type: ignore[import-untyped]  # noqa: F401  (registers "gsm03.38")
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import EncodeError
from protocols.sms_alphabet import Alphabet
from protocols.sms_pdu import (
    DeliveryOutcome,
    SmsDeliver,
    StatusReport,
    decode_pdu,
    delivery_outcome,
)
from protocols.sms_submit import Submission, encode_submit, relative_validity

NUMBER = "+32470123401"
EXTENSION = "^{}\\[~]|€"
"""The characters of the GSM 7-bit extension table: two septets each."""


# ------------------------------------------------------------ an independent reader


@dataclass(frozen=True)
class ReadSubmit:
    first: int
    mr: int
    destination: str
    dcs: int
    vp: int | None
    udl: int
    header: bytes
    text: str


def unpack(data: bytes, count: int) -> list[int]:
    bits = "".join(f"{octet:08b}"[::-1] for octet in data)  # least significant bit first
    return [int(bits[7 * i : 7 * i + 7][::-1], 2) for i in range(count)]


def read_submit(pdu_hex: str, length: int) -> ReadSubmit:
    data = bytes.fromhex(pdu_hex)
    assert data[0] == 0, "no SMSC field: the modem's own"
    tpdu = data[1:]
    assert len(tpdu) == length
    first, mr, digits, toa = tpdu[0], tpdu[1], tpdu[2], tpdu[3]
    assert first & 0x03 == 0x01, "MTI SUBMIT"
    pos = 4 + (digits + 1) // 2
    nibbles = "".join(f"{o:02X}"[::-1] for o in tpdu[4:pos])[:digits]
    destination = ("+" if toa == 0x91 else "") + nibbles
    pid, dcs = tpdu[pos], tpdu[pos + 1]
    assert pid == 0
    pos += 2
    vp = None
    if first & 0x18 == 0x10:
        vp = tpdu[pos]
        pos += 1
    udl = tpdu[pos]
    ud = tpdu[pos + 1 :]
    header = b""
    if first & 0x40:
        header = ud[1 : 1 + ud[0]]
    if dcs == 0x00:
        assert len(ud) == (udl * 7 + 7) // 8
        skip = (len(header) + 1) * 8 if header else 0
        septets = unpack(ud, udl)[(skip + 6) // 7 :]
        text = codecs.decode(bytes(septets), "gsm03.38")
    else:
        assert dcs == 0x08
        assert len(ud) == udl
        text = ud[len(header) + 1 if header else 0 :].decode("utf-16-be")
    return ReadSubmit(first, mr, destination, dcs, vp, udl, header, text)


def read_all(submission: Submission) -> list[ReadSubmit]:
    return [read_submit(part.pdu, part.length) for part in submission.parts]


def joined(submission: Submission) -> str:
    return "".join(part.text for part in read_all(submission))


# ------------------------------------------------------------ vectors


def test_the_classic_vector() -> None:
    """ "hellohello" to +46708251358, VP 4 days (the dreamfabric.com PDU example)."""
    one = encode_submit(
        "hellohello", "+46708251358", status_report=False, validity=timedelta(days=4)
    )
    assert [p.pdu for p in one.parts] == ["0011000B916407281553F80000AA0AE8329BFD4697D9EC37"]
    assert one.parts[0].length == 23
    reported = encode_submit("hellohello", "+46708251358", validity=timedelta(days=4))
    assert reported.parts[0].pdu == "0031000B916407281553F80000AA0AE8329BFD4697D9EC37"


def test_a_single_gsm7_message_reads_back() -> None:
    sub = encode_submit("How was your visit? Reply 0-10.", NUMBER)
    assert sub.alphabet is Alphabet.GSM7
    assert sub.concat_reference is None
    (read,) = read_all(sub)
    assert read.first == 0x31  # SUBMIT, VP relative, status report requested
    assert read.mr == 0
    assert read.destination == NUMBER
    assert read.vp == 168  # two days
    assert read.header == b""
    assert read.text == "How was your visit? Reply 0-10."


def test_a_national_number_and_an_odd_count_of_digits() -> None:
    (read,) = read_all(encode_submit("x", "0470123"))
    assert read.destination == "0470123"


@pytest.mark.parametrize("bad", ["", "+", "+32 470", "+32-470", "abc", "+" + "1" * 21, "٣٢"])
def test_bad_numbers_are_refused(bad: str) -> None:
    with pytest.raises(EncodeError):
        encode_submit("x", bad)


def test_empty_text_and_bad_reference_are_refused() -> None:
    with pytest.raises(EncodeError):
        encode_submit("", NUMBER)
    with pytest.raises(EncodeError):
        encode_submit("x", NUMBER, concat_reference=256)


def test_more_than_255_parts_is_refused() -> None:
    with pytest.raises(EncodeError):
        encode_submit("a" * (153 * 255 + 1), NUMBER)
    assert len(encode_submit("a" * (153 * 255), NUMBER).parts) == 255


# ------------------------------------------------------------ escapes and UCS2


def test_escaped_characters_count_two_septets() -> None:
    text = EXTENSION * 8  # 72 characters, 144 septets
    (read,) = read_all(encode_submit(text, NUMBER))
    assert read.udl == 144
    assert read.text == text
    assert len(encode_submit("€" * 80, NUMBER).parts) == 1  # 160 septets
    assert len(encode_submit("€" * 80 + "a", NUMBER).parts) == 2


def test_an_escape_pair_is_never_split_across_parts() -> None:
    text = "a" * 152 + "€" + "b" * 10  # the euro would start at septet 153
    sub = encode_submit(text, NUMBER)
    parts = read_all(sub)
    assert [p.text for p in parts] == ["a" * 152, "€" + "b" * 10]
    assert parts[0].udl == 7 + 152


def test_text_outside_the_alphabet_is_ucs2() -> None:
    text = "Wie war Ihr Besuch? Antwort 0\u201310 ç"  # an en dash, ç: not GSM 7-bit
    sub = encode_submit(text, NUMBER)
    assert sub.alphabet is Alphabet.UCS2
    (read,) = read_all(sub)
    assert read.dcs == 0x08
    assert read.udl == 2 * len(text)
    assert read.text == text


def test_characters_outside_the_bmp_count_two_units() -> None:
    assert len(encode_submit("😀" * 35, NUMBER).parts) == 1  # 70 units
    two = encode_submit("😀" * 35 + "a", NUMBER)
    assert len(two.parts) == 2
    texts = [p.text for p in read_all(two)]
    assert texts == ["😀" * 33, "😀" * 2 + "a"]  # 67 units would split a pair: 66


# ------------------------------------------------------------ part boundaries


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("ж" * 70, 1),
        ("ж" * 71, 2),
        ("ж" * 134, 2),
        ("ж" * 135, 3),
    ],
)
def test_single_and_concatenated_at_the_boundaries(text: str, parts: int) -> None:
    sub = encode_submit(text, NUMBER, concat_reference=7)
    assert len(sub.parts) == parts
    read = read_all(sub)
    assert "".join(p.text for p in read) == text
    if parts == 1:
        assert read[0].header == b""
        assert sub.concat_reference is None
        return
    assert sub.concat_reference == 7
    for index, part in enumerate(read, start=1):
        assert part.first & 0x40
        assert part.header == bytes((0x00, 3, 7, parts, index))
    per_part = 153 if sub.alphabet is Alphabet.GSM7 else 67
    assert [len(p.text) for p in read[:-1]] == [per_part] * (parts - 1)


@pytest.mark.parametrize(("count", "parts"), [(153, 1), (154, 1), (306, 2), (307, 3)])
def test_153_a_part(count: int, parts: int) -> None:
    # 153 and 154 fit one SMS; the 153-septet part size shows from 2 parts on.
    sub = encode_submit("b" * count, NUMBER)
    assert len(sub.parts) == parts
    if parts > 1:
        assert read_all(sub)[0].udl == 160  # 7 septets of header and fill, 153 of text


@pytest.mark.parametrize(("count", "parts"), [(67, 1), (68, 1), (134, 2), (135, 3)])
def test_67_a_ucs2_part(count: int, parts: int) -> None:
    sub = encode_submit("ж" * count, NUMBER)
    assert len(sub.parts) == parts
    if parts > 1:
        assert read_all(sub)[0].udl == 140


def test_the_gateway_delivers_each_part_the_way_the_deliver_decoder_reads_it() -> None:
    """Where SUBMIT and DELIVER agree (address, DCS, UDL, UD with its header), the
    DELIVER decoder reads the part the network makes of each SUBMIT."""
    sub = encode_submit("€" * 100 + "end", NUMBER, concat_reference=200)
    texts = []
    for part in sub.parts:
        tpdu = bytes.fromhex(part.pdu)[1:]
        first, digits = tpdu[0], tpdu[2]
        address = tpdu[2 : 4 + (digits + 1) // 2]
        rest = tpdu[4 + (digits + 1) // 2 :]  # PID DCS VP UDL UD
        scts = bytes.fromhex("62107021430500")
        deliver = bytes((0x00, first & 0x40 | 0x04)) + address + rest[:2] + scts + rest[3:]
        message = decode_pdu(deliver)
        assert isinstance(message, SmsDeliver)
        assert message.concat is not None
        assert message.concat.reference == 200
        texts.append(message.text)
    assert "".join(t or "" for t in texts) == "€" * 100 + "end"


# ------------------------------------------------------------ round trips

ALPHABET_TEXT = st.text(
    alphabet=st.sampled_from(
        "abcXYZ 019@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà\n" + EXTENSION
    ),
    min_size=1,
    max_size=700,
)


@settings(max_examples=150, deadline=None)
@given(ALPHABET_TEXT)
def test_gsm7_round_trip(text: str) -> None:
    sub = encode_submit(text, NUMBER)
    assert sub.alphabet is Alphabet.GSM7
    assert joined(sub) == text
    assert all(part.length <= 140 + 15 for part in sub.parts)


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=400))
def test_any_text_round_trips(text: str) -> None:
    sub = encode_submit(text, NUMBER, concat_reference=9)
    assert joined(sub) == text
    for part in read_all(sub):
        assert part.udl <= (160 if part.dcs == 0 else 140)


# ------------------------------------------------------------ validity and outcomes


@pytest.mark.parametrize(
    ("period", "octet"),
    [
        (timedelta(minutes=1), 0),
        (timedelta(minutes=5), 0),
        (timedelta(hours=12), 143),
        (timedelta(hours=12, minutes=30), 144),
        (timedelta(hours=24), 167),
        (timedelta(hours=36), 167),
        (timedelta(days=2), 168),
        (timedelta(days=30), 196),
        (timedelta(days=34), 196),
        (timedelta(weeks=5), 197),
        (timedelta(weeks=100), 255),
    ],
)
def test_relative_validity(period: timedelta, octet: int) -> None:
    assert relative_validity(period) == octet


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x00, DeliveryOutcome.DELIVERED),
        (0x01, DeliveryOutcome.DELIVERED),
        (0x1F, DeliveryOutcome.DELIVERED),
        (0x20, DeliveryOutcome.STILL_TRYING),
        (0x30, DeliveryOutcome.STILL_TRYING),
        (0x40, DeliveryOutcome.FAILED_PERMANENT),
        (0x41, DeliveryOutcome.FAILED_PERMANENT),
        (0x60, DeliveryOutcome.FAILED_PERMANENT),
        (0x7F, DeliveryOutcome.FAILED_PERMANENT),
    ],
)
def test_status_outcomes(status: int, outcome: DeliveryOutcome) -> None:
    assert delivery_outcome(status) is outcome


def test_a_status_report_decodes_to_its_reference_number_and_outcome() -> None:
    # SMSC +4917000000, SR, MR 0x2A, RA +32470123401, SCTS, DT, ST 0x00
    pdu = "07919471000000F0" + "06" + "2A" + "0B912374103204F1" + "62107021430500" * 2 + "00"
    report = decode_pdu(pdu)
    assert isinstance(report, StatusReport)
    assert report.message_reference == 42
    assert report.recipient == NUMBER
    assert report.outcome is DeliveryOutcome.DELIVERED
    failed = decode_pdu(pdu[:-2] + "41")
    assert isinstance(failed, StatusReport)
    assert failed.outcome is DeliveryOutcome.FAILED_PERMANENT
