"""The shared test vectors of terminal-protocol-v1 (spec section 7 and vectors-v1.json)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from protocols.constants import FrameType, NakCode
from protocols.errors import (
    BadCrc,
    BadTag,
    DecodeError,
    Malformed,
    UnknownTerminal,
    UnsupportedVersion,
)
from protocols.frames import (
    Frame,
    Hello,
    Hourly,
    Presses,
    crc16,
    decode,
    encode,
    frame_type,
)

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "shared" / "protocol"
VECTORS_PATH = PROTOCOL_DIR / "vectors-v1.json"
SPEC_PATH = PROTOCOL_DIR / "terminal-protocol-v1.md"

_DATA: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
KEYS: dict[int, bytes] = {int(tid): bytes.fromhex(key) for tid, key in _DATA["terminals"].items()}
VECTORS: dict[str, dict[str, Any]] = {v["name"]: v for v in _DATA["vectors"]}

# Valid frames: a full "fields" object with a type and no "expect".
VALID = [name for name, v in VECTORS.items() if "type" in v.get("fields", {}) and "expect" not in v]
# Frames the gateway refuses, with the exception class the codec raises.
INVALID: dict[str, type[DecodeError]] = {
    "bad_crc": BadCrc,
    "bad_tag": BadTag,
    "presses_count_mismatch": Malformed,
    "unsupported_version": UnsupportedVersion,
}
# Vectors with their own dedicated tests below.
SPECIAL = {"presses_bad_records", "hourly_sms_text"}

# Frames sent without a key (zero tag); the terminal decodes them with zero_tag_naks=True.
ZERO_TAG = {"nak_unknown_terminal"}

EXPECT_NAK = re.compile(r"^NAK (?P<code>[A-Z_]+)(?: ref_seq (?P<ref_seq>\d+))?(?P<close>, close)?$")


def keys(terminal_id: int) -> bytes | None:
    return KEYS.get(terminal_id)


def raw_of(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name]["hex"])


def decode_vector(name: str) -> Frame:
    return decode(raw_of(name), keys, zero_tag_naks=name in ZERO_TAG)


def observed(frame: Frame, wanted: dict[str, Any]) -> dict[str, Any]:
    """The frame's values of the fields ``wanted`` lists, in the JSON's shapes."""
    out: dict[str, Any] = {}
    for field in wanted:
        if field == "type":
            out[field] = frame_type(frame).name
            continue
        value = getattr(frame, field)
        if field == "records":
            value = [r._asdict() for r in value]
        elif field == "counts":
            value = [list(hour) for hour in value]
        out[field] = value
    return out


def test_vector_file_is_fully_covered() -> None:
    assert set(VECTORS) == set(VALID) | set(INVALID) | SPECIAL
    assert len(VALID) == 10
    assert set(KEYS) == {1001, 1002}
    assert all(len(key) == 16 for key in KEYS.values())


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_decodes_to_its_fields(name: str) -> None:
    fields: dict[str, Any] = VECTORS[name]["fields"]
    frame = decode_vector(name)
    assert observed(frame, fields) == fields
    # Every field the dataclass carries is listed, so "exactly" is checked.
    assert {f.name for f in dataclasses.fields(frame)} <= set(fields)


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_reencodes_identically(name: str) -> None:
    frame = decode_vector(name)
    key = None if name in ZERO_TAG else KEYS[frame.terminal_id]
    assert encode(frame, key) == raw_of(name)


def test_nak_unknown_terminal_needs_zero_tag_naks() -> None:
    raw = raw_of("nak_unknown_terminal")
    assert raw[-10:-2] == bytes(8)
    with pytest.raises(UnknownTerminal) as info:
        decode(raw, keys)
    assert info.value.terminal_id == 4242
    frame = decode(raw, keys, zero_tag_naks=True)
    assert frame == decode_vector("nak_unknown_terminal")
    assert getattr(frame, "code", None) is NakCode.UNKNOWN_TERMINAL


def test_nak_vector_code_is_a_nak_code() -> None:
    frame = decode_vector("nak")
    assert getattr(frame, "code", None) is NakCode.MALFORMED


def test_presses_clock_unsynced_fields() -> None:
    frame = decode_vector("presses_clock_unsynced")
    assert isinstance(frame, Presses)
    assert frame.clock_unsynced
    assert frame.terminal_id == 1002
    assert frame.sent_at == 946684830
    assert [(r.seq, r.ts) for r in frame.records] == [(0, 946684810), (1, 946684820)]
    assert all(r.problem is None for r in frame.records)


def test_presses_vector_is_synced() -> None:
    frame = decode_vector("presses")
    assert isinstance(frame, Presses)
    assert not frame.clock_unsynced
    assert frame.last_seq == 122


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_vector_gives_expected_error(name: str) -> None:
    vector = VECTORS[name]
    expect = EXPECT_NAK.match(vector["expect"])
    assert expect is not None, vector["expect"]
    with pytest.raises(INVALID[name]) as info:
        decode(raw_of(name), keys)
    error = info.value
    assert type(error) is INVALID[name]
    assert error.nak_code is NakCode[expect["code"]]
    assert error.closes is (expect["close"] is not None)
    if expect["ref_seq"] is not None:
        assert error.ref_seq == int(expect["ref_seq"])
    # Header errors keep the 10 header bytes; later errors keep the whole frame.
    assert len(error.raw) >= 10
    assert raw_of(name).startswith(error.raw)
    if not isinstance(error, UnsupportedVersion):
        assert error.raw == raw_of(name)


def test_presses_count_mismatch_is_malformed_with_ref_seq_1() -> None:
    with pytest.raises(Malformed) as info:
        decode(raw_of("presses_count_mismatch"), keys)
    assert info.value.nak_code is NakCode.MALFORMED
    assert info.value.ref_seq == 1
    assert info.value.closes is False
    assert info.value.frame_type == FrameType.PRESSES
    assert info.value.terminal_id == 1001


def test_bad_crc_and_bad_tag_vectors_differ_from_presses_only_in_trailer() -> None:
    presses = raw_of("presses")
    bad_crc = raw_of("bad_crc")
    bad_tag = raw_of("bad_tag")
    assert bad_crc[:-2] == presses[:-2]
    assert bad_crc[-2:] != presses[-2:]
    assert bad_tag[:-10] == presses[:-10]
    # bad_tag has a correct crc, so the tag check is what fails.
    assert crc16(bad_tag[:-2]) == int.from_bytes(bad_tag[-2:], "big")


def test_presses_bad_records() -> None:
    vector = VECTORS["presses_bad_records"]
    frame = decode(raw_of("presses_bad_records"), keys)
    assert isinstance(frame, Presses)
    assert observed(frame, vector["fields"]) == vector["fields"]
    problems = {r.seq: r.problem for r in frame.records}
    assert set(problems) == {130, 131, 132}
    assert problems[130] is not None
    assert "button" in problems[130]
    assert problems[131] is not None
    assert "followup" in problems[131]
    assert problems[132] is None
    by_seq = {r.seq: r for r in frame.records}
    assert by_seq[130].button == 5
    assert by_seq[131].followup == 17
    # "ACK acked_seq 132": the ACK names the frame's last record.
    assert frame.last_seq == 132
    assert encode(frame, KEYS[1001]) == raw_of("presses_bad_records")


def test_hourly_sms_text_is_the_hourly_frame() -> None:
    vector = VECTORS["hourly_sms_text"]
    text: str = vector["text"]
    assert text.startswith("SM1 ")
    raw = base64.b64decode(text.removeprefix("SM1 "), validate=True)
    assert raw == raw_of(vector["same_frame_as"])
    frame = decode(raw, keys)
    assert isinstance(frame, Hourly)
    assert frame == decode_vector(vector["same_frame_as"])


def test_hourly_24h_is_longer_than_one_sms() -> None:
    raw = raw_of("hourly_24h")
    assert len(raw) == 221
    frame = decode(raw, keys)
    assert isinstance(frame, Hourly)
    assert frame.n_hours == 24


# Section 7 of the spec, split by field.
SPEC_HELLO = "534d 01 01 000003e9 000e | 0102 00000007 6955b900 0000 0003 | 4fcef7ef506cc6ce | 05e6"


def test_spec_hello_example_is_in_the_spec() -> None:
    assert SPEC_HELLO in SPEC_PATH.read_text(encoding="utf-8")


def test_spec_hello_example() -> None:
    raw = bytes.fromhex(SPEC_HELLO.replace("|", "").replace(" ", ""))
    hello = Hello(
        terminal_id=1001, fw_version=0x0102, boot_count=7, clock=1767225600, flags=0, queued=3
    )
    assert KEYS[1001] == bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    assert encode(hello, KEYS[1001]) == raw
    assert decode(raw, keys) == hello
    assert raw == raw_of("hello")
    head, payload, tag, crc = (bytes.fromhex(p.replace(" ", "")) for p in SPEC_HELLO.split("|"))
    assert len(head) == 10
    assert len(payload) == 14
    assert len(tag) == 8
    assert crc16(head + payload + tag) == int.from_bytes(crc, "big")
