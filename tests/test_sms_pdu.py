"""The SMS PDU decoder: the collected reference vectors, hand-built PDUs, and fuzzing.

The small PDU builder here is test-local on purpose: it shares no code with the
decoder (nor with ``firmware_sim``), so a bug in one shows up in the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import gsm0338  # type: ignore[import-untyped]  # noqa: F401  (registers "gsm03.38")
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocols.errors import ProtocolError, SmsDecodeError
from protocols.sms_pdu import (
    Alphabet,
    Concat,
    DataCoding,
    InformationElement,
    SmsDeliver,
    StatusReport,
    data_coding,
    decode_gsm7,
    decode_pdu,
    decode_ucs2,
    unpack_septets,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "sms-pdu-vectors.json"
_DATA: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
VECTORS: list[dict[str, Any]] = _DATA["vectors"]
DELIVERS = [v for v in VECTORS if v["type"] == "SMS-DELIVER"]

WHEN = datetime(2026, 1, 1, 12, 0, 5, tzinfo=timezone(timedelta(hours=2)))


# ------------------------------------------------------------ a test-local PDU builder


def swapped_bcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes(int(digits[i + 1] + digits[i], 16) for i in range(0, len(digits), 2))


def pack(septets: bytes, start_bit: int = 0) -> bytes:
    value = 0
    for i, septet in enumerate(septets):
        value |= septet << (start_bit + 7 * i)
    bits = start_bit + 7 * len(septets)
    return value.to_bytes((bits + 7) // 8, "little")


def gsm(text: str) -> bytes:
    return text.encode("gsm03.38")


def address(number: str, toa: int | None = None) -> bytes:
    """TP-OA: semi-octet count, type of address, value."""
    if toa is not None and (toa >> 4) & 7 == 5:
        septets = gsm(number)
        return bytes(((len(septets) * 7 + 3) // 4, toa)) + pack(septets)
    digits = number.removeprefix("+")
    if toa is None:
        toa = 0x91 if number.startswith("+") else 0x81
    return bytes((len(digits), toa)) + swapped_bcd(digits)


def smsc_field(number: str | None) -> bytes:
    if number is None:
        return b"\x00"
    body = bytes((0x91,)) + swapped_bcd(number.removeprefix("+"))
    return bytes((len(body),)) + body


def bcd2(value: int) -> int:
    return (value % 10) << 4 | value // 10


def scts(when: datetime) -> bytes:
    offset = when.utcoffset()
    assert offset is not None
    quarters = int(abs(offset) / timedelta(minutes=15))
    zone = bcd2(quarters) | (0x08 if offset < timedelta(0) else 0)
    fields = (when.year % 100, when.month, when.day, when.hour, when.minute, when.second)
    return bytes(bcd2(v) for v in fields) + bytes((zone,))


def concat8(reference: int, total: int, index: int) -> bytes:
    return bytes((0x00, 3, reference, total, index))


def concat16(reference: int, total: int, index: int) -> bytes:
    return bytes((0x08, 4, reference >> 8, reference & 0xFF, total, index))


@dataclass(frozen=True)
class Pdu:
    """An SMS-DELIVER to build. ``septets`` (GSM 7-bit) or ``octets`` (others) is the body."""

    body: bytes = b""
    dcs: int = 0x00
    septets_form: bool = True
    udh: bytes = b""
    sender: str = "+358401234567"
    sender_toa: int | None = None
    smsc: str | None = "+358405202000"
    pid: int = 0x00
    when: datetime = WHEN
    first: int = 0x04

    def octets(self) -> bytes:
        header = bytes((len(self.udh),)) + self.udh if self.udh else b""
        if self.septets_form:
            start = (len(header) * 8 + 6) // 7 * 7  # header plus fill bits
            value = int.from_bytes(header, "little")
            for i, septet in enumerate(self.body):
                value |= septet << (start + 7 * i)
            bits = start + 7 * len(self.body)
            udl = bits // 7
            ud = value.to_bytes((bits + 7) // 8, "little")
        else:
            ud = header + self.body
            udl = len(ud)
        first = self.first | (0x40 if self.udh else 0)
        return (
            smsc_field(self.smsc)
            + bytes((first,))
            + address(self.sender, self.sender_toa)
            + bytes((self.pid, self.dcs))
            + scts(self.when)
            + bytes((udl,))
            + ud
        )

    def hex(self) -> str:
        return self.octets().hex().upper()


def text_pdu(text: str, **kwargs: Any) -> Pdu:
    return Pdu(body=gsm(text), **kwargs)


def ucs2_pdu(text: str, **kwargs: Any) -> Pdu:
    return Pdu(body=text.encode("utf-16-be"), dcs=0x08, septets_form=False, **kwargs)


def binary_pdu(data: bytes, dcs: int = 0x04, **kwargs: Any) -> Pdu:
    return Pdu(body=data, dcs=dcs, septets_form=False, **kwargs)


def deliver(pdu: Pdu | str | bytes, *, has_smsc: bool = True) -> SmsDeliver:
    message = decode_pdu(pdu.hex() if isinstance(pdu, Pdu) else pdu, has_smsc=has_smsc)
    assert isinstance(message, SmsDeliver)
    return message


# ------------------------------------------------------------ the reference vectors


def _concat_of(message: SmsDeliver) -> dict[str, int] | None:
    if message.concat is None:
        return None
    c = message.concat
    return {"ref": c.reference, "total": c.total, "seq": c.index, "ref_bits": c.reference_bits}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_reference_vector(vector: dict[str, Any]) -> None:
    message = decode_pdu(vector["pdu"])
    expected_time = datetime.fromisoformat(vector["timestamp"])
    assert message.smsc == vector["smsc"]
    assert message.timestamp == expected_time
    assert message.timestamp.utcoffset() == expected_time.utcoffset()
    if vector["type"] == "SMS-STATUS-REPORT":
        assert isinstance(message, StatusReport)
        assert message.status == int(vector["status"], 16)
        return
    assert vector["type"] == "SMS-DELIVER"
    assert isinstance(message, SmsDeliver)
    assert message.sender == vector["sender"]
    assert message.sender_toa == int(vector["sender_toa"], 16)
    assert message.pid == int(vector["pid"], 16)
    assert message.dcs == int(vector["dcs"]["octet"], 16)
    assert message.alphabet == vector["dcs"]["alphabet"]
    assert message.message_class == vector["dcs"]["message_class"]
    assert _concat_of(message) == vector["udh_concat"]
    if "text" in vector:
        assert message.text == vector["text"]
    if "data_hex" in vector:
        assert message.alphabet is Alphabet.EIGHT_BIT
        assert message.text is None
        assert message.user_data.hex() == vector["data_hex"]


def test_every_reference_vector_has_its_fields() -> None:
    """Guards the test above against a vector it would silently check less of."""
    for vector in VECTORS:
        assert {"pdu", "type", "smsc", "timestamp"} <= vector.keys()
        if vector["type"] == "SMS-DELIVER":
            assert {"sender", "sender_toa", "pid", "dcs", "udh_concat"} <= vector.keys()
            assert ("text" in vector) != ("data_hex" in vector)
        else:
            assert "status" in vector
    assert len(VECTORS) == 41


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_reference_vector_without_smsc_and_as_bytes(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["pdu"])
    whole = decode_pdu(raw)
    assert decode_pdu(vector["pdu"].lower()) == whole
    without = decode_pdu(raw[1 + raw[0] :], has_smsc=False)
    assert without.smsc is None
    assert type(without)(**{**_fields(whole), "smsc": None}) == without


def _fields(message: SmsDeliver | StatusReport) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__dataclass_fields__}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_reference_vector_cut_short_or_extended(vector: dict[str, Any]) -> None:
    """Every proper prefix is short, and any octet after the end is one too many."""
    raw = bytes.fromhex(vector["pdu"])
    for end in range(len(raw)):
        with pytest.raises(SmsDecodeError):
            decode_pdu(raw[:end])
    if vector["type"] == "SMS-STATUS-REPORT":
        # One more octet is a TP-PI naming no further parameters; the next one is too many.
        assert decode_pdu(raw + b"\x00") == decode_pdu(raw)
        raw += b"\x00"
    with pytest.raises(SmsDecodeError, match="after the end"):
        decode_pdu(raw + b"\x00")


def test_status_report_fields() -> None:
    report = decode_pdu("07914356060013F1065A098136397339F7219011700463802190117004638030")
    assert report == StatusReport(
        smsc="+34656000311",
        message_reference=0x5A,
        recipient="639337937",
        recipient_toa=0x81,
        timestamp=datetime(2012, 9, 11, 7, 40, 36, tzinfo=timezone(timedelta(hours=2))),
        discharge_time=datetime(2012, 9, 11, 7, 40, 36, tzinfo=timezone(timedelta(hours=2))),
        status=0x30,
    )
    assert not report.completed


def test_status_report_with_parameters() -> None:
    body = (
        bytes((0x06, 0x2A))
        + address("+4915112345678")
        + scts(WHEN)
        + scts(WHEN + timedelta(seconds=9))
        + bytes((0x00, 0x07, 0x00, 0x00, 2))
        + pack(gsm("ok"))
    )
    report = decode_pdu(b"\x00" + body)
    assert isinstance(report, StatusReport)
    assert report.completed
    assert (report.pid, report.dcs, report.text, report.user_data) == (0, 0, "ok", gsm("ok"))
    assert report.discharge_time - report.timestamp == timedelta(seconds=9)
    only_pi = decode_pdu(b"\x00" + body[: -(4 + 2)])
    assert isinstance(only_pi, StatusReport)
    assert (only_pi.pid, only_pi.dcs, only_pi.text) == (None, None, None)


# ------------------------------------------------------------ hand-built PDUs


def test_single_gsm7_message() -> None:
    message = deliver(text_pdu("Hello smiley"))
    assert message == SmsDeliver(
        smsc="+358405202000",
        sender="+358401234567",
        sender_toa=0x91,
        pid=0,
        dcs=0,
        alphabet=Alphabet.GSM7,
        message_class=None,
        timestamp=WHEN,
        concat=None,
        user_data=gsm("Hello smiley"),
        text="Hello smiley",
    )


@pytest.mark.parametrize(
    ("udh", "concat"),
    [
        (concat8(0xC3, 3, 2), Concat(0xC3, 8, 3, 2)),  # 6 header octets: 1 fill bit
        (concat16(0x1234, 3, 2), Concat(0x1234, 16, 3, 2)),  # 7 header octets: no fill
        (concat16(0xFFFF, 255, 255), Concat(0xFFFF, 16, 255, 255)),
    ],
)
def test_concatenated_gsm7_with_fill_bits(udh: bytes, concat: Concat) -> None:
    text = "Welcome to the 7-bit world of @ and {escapes} and more" * 2
    message = deliver(text_pdu(text, udh=udh))
    assert message.concat == concat
    assert message.text == text
    assert message.user_data == gsm(text)


@pytest.mark.parametrize("header_octets", range(1, 15))
def test_any_header_length_gets_its_fill_bits(header_octets: int) -> None:
    # An unknown element (SC-specific IEI 0xC0) of every size before the concatenation one.
    udh = bytes((0xC0, header_octets - 1)) + bytes(range(header_octets - 1)) + concat8(1, 2, 1)
    message = deliver(text_pdu("Abc" * 10, udh=udh))
    assert message.text == "Abc" * 10
    assert message.concat == Concat(1, 8, 2, 1)
    assert message.elements[0] == InformationElement(0xC0, bytes(range(header_octets - 1)))


def test_unknown_elements_are_skipped() -> None:
    udh = bytes((0xA5, 4, 1, 2, 3, 4)) + concat16(777, 2, 2) + bytes((0x70, 0))
    message = deliver(binary_pdu(b"payload", udh=udh))
    assert message.concat == Concat(777, 16, 2, 2)
    assert message.user_data == b"payload"
    assert message.elements == (
        InformationElement(0xA5, b"\x01\x02\x03\x04"),
        InformationElement(0x08, b"\x03\x09\x02\x02"),
        InformationElement(0x70, b""),
    )


def test_last_concatenation_element_counts() -> None:
    message = deliver(binary_pdu(b"x", udh=concat8(1, 2, 1) + concat16(500, 3, 3)))
    assert message.concat == Concat(500, 16, 3, 3)


@pytest.mark.parametrize("udh", [concat8(9, 0, 0), concat8(9, 2, 0), concat8(9, 2, 3)])
def test_impossible_concatenation_element_is_ignored(udh: bytes) -> None:
    """TS 23.040 9.2.3.24.1: the receiving entity shall ignore the whole element."""
    message = deliver(binary_pdu(b"x", udh=udh))
    assert message.concat is None
    assert message.elements == (InformationElement(0, udh[2:]),)


@pytest.mark.parametrize(
    ("sender", "semi_octets"),
    [
        ("Smiley", 11),
        ("O2_", 6),
        ("Megafon", 13),
        ("Shop [1]", 18),
        ("InternetSMS", 20),
        ("ABCDEFGH", 14),
    ],
)
def test_alphanumeric_sender(sender: str, semi_octets: int) -> None:
    pdu = text_pdu("hi", sender=sender, sender_toa=0xD0)
    assert pdu.octets()[1 + pdu.octets()[0] + 1] == semi_octets
    message = deliver(pdu)
    assert message.sender == sender
    assert message.sender_toa == 0xD0


@pytest.mark.parametrize(
    ("number", "toa", "expected"),
    [
        ("+4915112345678", 0x91, "+4915112345678"),
        ("015112345678", 0xA1, "015112345678"),
        ("12345", 0x81, "12345"),
        ("*100#", 0x81, "*100#"),
        ("", 0x81, ""),
    ],
)
def test_numeric_senders(number: str, toa: int, expected: str) -> None:
    digits = number.replace("*", "A").replace("#", "B").removeprefix("+")
    oa = bytes((len(digits), toa)) + swapped_bcd(digits)
    pdu = smsc_field(None) + b"\x04" + oa + b"\x00\x00" + scts(WHEN) + b"\x00"
    message = deliver(pdu)
    assert (message.sender, message.sender_toa, message.smsc) == (expected, toa, None)


@pytest.mark.parametrize(
    "offset",
    [
        timedelta(0),
        timedelta(hours=-3),
        timedelta(hours=-3, minutes=-30),
        timedelta(minutes=-15),
        timedelta(hours=5, minutes=45),
        timedelta(hours=-12),
        timedelta(hours=14),
        timedelta(hours=19, minutes=45),
        timedelta(hours=-19, minutes=-45),
    ],
)
def test_time_zone_in_quarter_hours(offset: timedelta) -> None:
    when = datetime(2026, 3, 29, 1, 59, 59, tzinfo=timezone(offset))
    message = deliver(text_pdu("t", when=when))
    assert message.timestamp == when
    assert message.timestamp.utcoffset() == offset


def test_negative_zone_bit_is_in_the_tens_digit() -> None:
    # -03:00 is 12 quarters: digits "12", swapped 0x21, sign bit 3 of the low nibble: 0x29.
    utc = datetime(2010, 9, 11, 15, 10, 11, tzinfo=UTC)
    pdu = bytearray(text_pdu("t", when=utc).octets())
    at = bytes(pdu).index(scts(utc))
    assert pdu[at + 6] == 0x00
    pdu[at + 6] = 0x29
    message = deliver(bytes(pdu))
    assert message.timestamp.utcoffset() == timedelta(hours=-3)
    assert message.timestamp == datetime(2010, 9, 11, 18, 10, 11, tzinfo=UTC)


def test_two_digit_years() -> None:
    for year in (1970, 1999, 2000, 2026, 2069):
        when = datetime(year, 6, 1, tzinfo=UTC)
        assert deliver(text_pdu("y", when=when)).timestamp == when


@pytest.mark.parametrize(
    "text",
    [
        "smile \U0001f600",
        "\U0001f44d\U0001f3fd thumbs",
        "\u4e2d\u5174\u901a\u8baf",
        "\U00010348 gothic, then ascii",
    ],
)
def test_ucs2_with_surrogate_pairs(text: str) -> None:
    message = deliver(ucs2_pdu(text))
    assert message.alphabet is Alphabet.UCS2
    assert message.text == text
    assert message.user_data == text.encode("utf-16-be")


def test_ucs2_broken_units_are_escaped_not_dropped() -> None:
    high, low = "\U0001f600".encode("utf-16-be")[:2], "\U0001f600".encode("utf-16-be")[2:]
    assert deliver(binary_pdu(b"\x00A" + high, dcs=0x08)).text == "A\\xd8\\x3d"
    assert deliver(binary_pdu(low + b"\x00B", dcs=0x08)).text == "\\xde\\x00B"
    assert deliver(binary_pdu(b"\x00A\x00", dcs=0x08)).text == "A\\x00"
    assert decode_ucs2(high + low) == "\U0001f600"


@pytest.mark.parametrize(("dcs", "klass"), [(0xF4, 0), (0xF5, 1), (0xF6, 2), (0xF7, 3)])
def test_8bit_with_message_class(dcs: int, klass: int) -> None:
    frame = bytes(range(256))[:140]
    message = deliver(binary_pdu(frame, dcs=dcs))
    assert (message.alphabet, message.message_class, message.text) == (
        Alphabet.EIGHT_BIT,
        klass,
        None,
    )
    assert message.user_data == frame


def test_8bit_with_header_and_full_user_data() -> None:
    data = bytes(134)
    message = deliver(binary_pdu(data, dcs=0xF5, udh=concat8(200, 2, 1)))
    assert message.user_data == data
    assert message.concat == Concat(200, 8, 2, 1)
    with pytest.raises(SmsDecodeError, match="exceeds 140 octets"):
        deliver(binary_pdu(data + b"!", dcs=0xF5, udh=concat8(200, 2, 1)))


@pytest.mark.parametrize(
    ("dcs", "expected"),
    [
        (0x00, DataCoding(Alphabet.GSM7, None)),
        (0x04, DataCoding(Alphabet.EIGHT_BIT, None)),
        (0x08, DataCoding(Alphabet.UCS2, None)),
        (0x0C, DataCoding(Alphabet.GSM7, None)),  # reserved alphabet: GSM 7-bit
        (0x06, DataCoding(Alphabet.EIGHT_BIT, None)),  # class bits without bit 4: no class
        (0x10, DataCoding(Alphabet.GSM7, 0)),
        (0x11, DataCoding(Alphabet.GSM7, 1)),
        (0x12, DataCoding(Alphabet.GSM7, 2)),
        (0x13, DataCoding(Alphabet.GSM7, 3)),
        (0x15, DataCoding(Alphabet.EIGHT_BIT, 1)),
        (0x1A, DataCoding(Alphabet.UCS2, 2)),
        (0x20, DataCoding(Alphabet.GSM7, None, compressed=True)),
        (0x39, DataCoding(Alphabet.UCS2, 1, compressed=True)),
        (0x40, DataCoding(Alphabet.GSM7, None)),  # marked for automatic deletion
        (0x44, DataCoding(Alphabet.EIGHT_BIT, None)),
        (0x58, DataCoding(Alphabet.UCS2, 0)),
        (0x80, DataCoding(Alphabet.GSM7, None)),  # reserved group: GSM 7-bit
        (0xB4, DataCoding(Alphabet.GSM7, None)),
        (0xC0, DataCoding(Alphabet.GSM7, None)),  # message waiting, discard
        (0xD8, DataCoding(Alphabet.GSM7, None)),  # message waiting, store
        (0xE8, DataCoding(Alphabet.UCS2, None)),  # message waiting, store, UCS2
        (0xF0, DataCoding(Alphabet.GSM7, 0)),
        (0xF1, DataCoding(Alphabet.GSM7, 1)),
        (0xF3, DataCoding(Alphabet.GSM7, 3)),
        (0xF4, DataCoding(Alphabet.EIGHT_BIT, 0)),
        (0xF5, DataCoding(Alphabet.EIGHT_BIT, 1)),
    ],
)
def test_data_coding_schemes(dcs: int, expected: DataCoding) -> None:
    assert data_coding(dcs) == expected


def test_compressed_message_is_kept_as_octets() -> None:
    message = deliver(binary_pdu(b"\x01\x02\x03", dcs=0x20))
    assert (message.compressed, message.alphabet, message.text) == (True, Alphabet.GSM7, None)
    assert message.user_data == b"\x01\x02\x03"


def test_pid_and_first_octet_flags() -> None:
    message = deliver(text_pdu("x", pid=0x39, first=0x00 | 0x20 | 0x80))
    assert message.pid == 0x39
    assert message.text == "x"


# ------------------------------------------------------------ GSM 7-bit alphabet


def test_gsm7_extension_table() -> None:
    text = "{}[]~\\|^\u20ac\f"
    assert deliver(text_pdu(text)).text == text
    assert decode_gsm7(gsm(text)) == text


@pytest.mark.parametrize(
    ("septets", "text"),
    [
        (b"\x1b\x41", " A"),  # escape + undefined: a space, then the default character
        (b"a\x1b\x20b", "a  b"),
        (b"\x1b\x1b\x65", " \u20ac"),  # escape to a further table: a space
        (b"\x1b\x1b", "  "),
        (b"end\x1b", "end "),  # a lone escape at the end
        (b"\x1b", " "),
        (b"\x1b\x00", " @"),
        (b"\x00", "@"),
    ],
)
def test_gsm7_unknown_escapes_are_spaces(septets: bytes, text: str) -> None:
    assert decode_gsm7(septets) == text
    message = deliver(Pdu(body=septets))
    assert message.text == text
    assert message.user_data == septets  # the exact septets stay


@given(st.binary(max_size=160).map(lambda b: bytes(x & 0x7F for x in b)))
def test_gsm7_never_drops_or_invents(septets: bytes) -> None:
    """Each septet outside a defined escape pair gives exactly one character."""
    text = decode_gsm7(septets)
    pairs = 0
    i = 0
    while i < len(septets):
        if septets[i] == 0x1B and i + 1 < len(septets):
            try:
                septets[i : i + 2].decode("gsm03.38")
            except UnicodeDecodeError:
                i += 1
                continue
            pairs += 1
            i += 2
            continue
        i += 1
    assert len(text) == len(septets) - pairs


def test_septets_over_0x7f_are_refused() -> None:
    with pytest.raises(SmsDecodeError):
        decode_gsm7(b"\x80")


def test_unpack_septets() -> None:
    assert unpack_septets(bytes.fromhex("E8329BFD4697D9EC37"), 10) == gsm("hellohello")
    with pytest.raises(SmsDecodeError):
        unpack_septets(b"\x00", 2)


# ------------------------------------------------------------ short and inconsistent


def _patched(pdu: bytes, offset: int, value: int) -> bytes:
    return pdu[:offset] + bytes((value,)) + pdu[offset + 1 :]


_PLAIN = text_pdu("hi", smsc=None, sender="+12345").octets()
# 00 | 04 | 05 91 2143F5 | 00 | 00 | scts(7) | 02 | 2 octets
_AT_OA = 2
_AT_DCS = 8
_AT_SCTS = 9
_AT_UDL = 16


@pytest.mark.parametrize(
    ("pdu", "reason"),
    [
        ("", "SMSC length"),
        ("0G", "hex"),
        ("001", "hex"),
        ("0C91" + "11" * 11, "SMSC length 12"),
        (b"\x00\x01" + _PLAIN[2:], "message type indicator 1"),
        (b"\x00\x03" + _PLAIN[2:], "message type indicator 3"),
        (_patched(_PLAIN, _AT_OA, 21), "TP-OA length 21"),
        (_PLAIN[:4] + b"\x21\xf3" + _PLAIN[6:], "filler"),
        (_patched(_PLAIN, _AT_SCTS + 1, 0x31), "month must be in 1..12"),
        (_patched(_PLAIN, _AT_SCTS, 0xA0), "not two BCD digits"),
        (_patched(_PLAIN, _AT_SCTS + 6, 0xA0), "time zone"),
        (_patched(_PLAIN, _AT_UDL, 161), "exceeds 160 septets"),
        (_patched(_patched(_PLAIN, _AT_DCS, 0x04), _AT_UDL, 141), "exceeds 140 octets"),
        (_patched(_PLAIN, _AT_UDL, 3), "TP-UD of 3 septets"),
        (_PLAIN + b"\x00", "1 octets after the end"),
    ],
    ids=lambda value: value if isinstance(value, str) else "pdu",
)
def test_inconsistent_pdus(pdu: str | bytes, reason: str) -> None:
    with pytest.raises(SmsDecodeError, match=reason) as info:
        decode_pdu(pdu)
    assert info.value.reason
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize(
    ("ud", "udl", "reason"),
    [
        (b"", 0, "UDHI is set but the user data is empty"),
        (b"\x05\x00\x03\x01", 4, "TP-UDHL 5 runs past"),
        (b"\x01\x00", 2, "has no length octet"),
        (b"\x03\x00\x05\x01", 4, "runs past the header"),
        (b"\x04\x00\x02\x01\x01", 5, "8-bit concatenation element of 2 octets"),
        (b"\x05\x08\x03\x01\x01\x01", 6, "16-bit concatenation element of 3 octets"),
    ],
)
def test_inconsistent_user_data_headers(ud: bytes, udl: int, reason: str) -> None:
    head = smsc_field(None) + b"\x44" + address("+1") + b"\x00\x04" + scts(WHEN)
    with pytest.raises(SmsDecodeError, match=reason):
        decode_pdu(head + bytes((udl,)) + ud)


def test_header_longer_than_the_septets() -> None:
    # 7-bit, UDL 1 septet in 1 octet: an empty header (UDHL 0) fits the octet, but its
    # 8 bits and fill take 2 septets.
    head = smsc_field(None) + b"\x44" + address("+1") + b"\x00\x00" + scts(WHEN)
    with pytest.raises(SmsDecodeError, match="exceeds TP-UDL 1"):
        decode_pdu(head + b"\x01\x00")


def decodes_or_refuses(pdu: str | bytes, *, has_smsc: bool = True) -> None:
    """Decodes, or raises SmsDecodeError with a reason: nothing else may come out."""
    reason = "decoded"
    try:
        decode_pdu(pdu, has_smsc=has_smsc)
    except SmsDecodeError as exc:
        reason = exc.reason
    assert reason


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=200), has_smsc=st.booleans())
@example(data=bytes.fromhex(VECTORS[0]["pdu"])[:-1], has_smsc=True)
@example(data=b"\x00\x40" + bytes(30), has_smsc=True)
def test_random_bytes_raise_only_sms_decode_error(data: bytes, has_smsc: bool) -> None:
    decodes_or_refuses(data, has_smsc=has_smsc)


@settings(max_examples=300, deadline=None)
@given(
    vector=st.sampled_from(VECTORS),
    offset=st.integers(min_value=0, max_value=200),
    value=st.integers(min_value=0, max_value=255),
)
def test_mutated_vectors_raise_only_sms_decode_error(
    vector: dict[str, Any], offset: int, value: int
) -> None:
    raw = bytearray.fromhex(vector["pdu"])
    raw[offset % len(raw)] = value
    decodes_or_refuses(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_random_text_raises_only_sms_decode_error(text: str) -> None:
    decodes_or_refuses(text)


# ------------------------------------------------------------ round trips through the builder


def _in_gsm7(ch: str) -> bool:
    try:
        ch.encode("gsm03.38")
    except UnicodeEncodeError:
        return False
    return True


GSM7_CHARS = "\u20ac" + "".join(
    ch for ch in map(chr, range(0x400)) if _in_gsm7(ch) and ch != "\x1b"
)
gsm7_texts = st.text(alphabet=GSM7_CHARS, max_size=70).filter(lambda t: len(gsm(t)) <= 70)
udhs = st.one_of(
    st.just(b""),
    st.builds(concat8, st.integers(0, 255), st.just(3), st.integers(1, 3)),
    st.builds(concat16, st.integers(0, 0xFFFF), st.just(9), st.integers(1, 9)),
    st.binary(min_size=0, max_size=20).map(lambda b: bytes((0xC1, len(b))) + b),
)
zones = st.integers(-79, 79).map(lambda q: timezone(timedelta(minutes=15 * q)))
times = st.builds(
    lambda dt, tz: dt.replace(tzinfo=tz),
    st.datetimes(datetime(1970, 1, 1), datetime(2069, 12, 31, 23, 59, 59)).map(
        lambda dt: dt.replace(microsecond=0)
    ),
    zones,
)


@settings(max_examples=150, deadline=None)
@given(
    text=gsm7_texts, udh=udhs, when=times, sender=st.from_regex(r"\+?[0-9]{1,20}", fullmatch=True)
)
def test_gsm7_round_trip(text: str, udh: bytes, when: datetime, sender: str) -> None:
    message = deliver(text_pdu(text, udh=udh, when=when, sender=sender))
    assert (message.text, message.sender, message.timestamp) == (text, sender, when)
    assert message.timestamp.utcoffset() == when.utcoffset()
    assert message.user_data == gsm(text)


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(st.characters(codec="utf-8"), max_size=30).filter(
        lambda t: len(t.encode("utf-16-be")) <= 112
    ),
    udh=udhs,
)
def test_ucs2_round_trip(text: str, udh: bytes) -> None:
    message = deliver(ucs2_pdu(text, udh=udh))
    assert message.text == text
