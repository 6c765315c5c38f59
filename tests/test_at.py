"""The AT engine: line splitting, final results, URCs in the middle of responses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.at import (
    AtSession,
    Event,
    Final,
    FinalKind,
    LineSplitter,
    Prompt,
    Response,
    Stray,
    Urc,
    classify_final,
    own_prefix,
)

CMGR_PDU = "07911326040000F0040B911346610089F60000208062917314800CC8F71D14969741F977FD07"


def run(command: str, *chunks: bytes) -> list[Event]:
    session = AtSession()
    assert session.command(command) == command.encode() + b"\r"
    events: list[Event] = []
    for chunk in chunks:
        events += session.feed(chunk)
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize(
    "wire",
    [
        b"\r\n+CSQ: 21,99\r\n\r\nOK\r\n",
        b"\r\r\n+CSQ: 21,99\r\r\n\r\r\nOK\r\r\n",  # Huawei
        b"\r+CSQ: 21,99\r\rOK\r",  # a lone CR
        b"\xff\x00\xfe+CSQ: 21,99\nOK\n",  # noise before the modem talks
        b"AT+CSQ\r\r\n+CSQ: 21,99\r\n\r\nOK\r\n",  # echo on
    ],
)
def test_a_response_whatever_the_line_endings(wire: bytes) -> None:
    for chunks in ([wire], bytewise(wire)):
        assert run("AT+CSQ", *chunks) == [Response("AT+CSQ", ("+CSQ: 21,99",), Final(FinalKind.OK))]


@pytest.mark.parametrize(
    ("line", "final"),
    [
        ("OK", Final(FinalKind.OK)),
        ("ERROR", Final(FinalKind.ERROR)),
        ("+CME ERROR: 14", Final(FinalKind.CME_ERROR, 14, "14")),
        ("+CME ERROR: SIM busy", Final(FinalKind.CME_ERROR, 14, "SIM busy")),
        ("+CMS ERROR: 321", Final(FinalKind.CMS_ERROR, 321, "321")),
        (
            "+CMS ERROR: invalid memory index",
            Final(FinalKind.CMS_ERROR, 321, "invalid memory index"),
        ),
        ("+CMS ERROR: something odd", Final(FinalKind.CMS_ERROR, None, "something odd")),
        ("COMMAND NOT SUPPORT", Final(FinalKind.NOT_SUPPORTED)),
        ("+CMGR: 0,,24", None),
    ],
)
def test_final_results(line: str, final: Final | None) -> None:
    assert classify_final(line) == final


def test_busy_codes() -> None:
    assert all(classify_final(f"+CMS ERROR: {c}").busy for c in (314, 515))  # type: ignore[union-attr]
    assert classify_final("+CME ERROR: SIM busy").busy  # type: ignore[union-attr]
    assert not classify_final("+CMS ERROR: 321").busy  # type: ignore[union-attr]


def test_urcs_inside_a_response_are_routed_out_of_it() -> None:
    wire = (
        b"\r\n+CMGR: 0,,24\r\n^RSSI:14\r\n+CMTI: \"SM\",3\r\n" + CMGR_PDU.encode()
        + b"\r\n+CREG: 1\r\n\r\nOK\r\n"
    )  # fmt: skip
    for chunks in ([wire], bytewise(wire)):
        assert run("AT+CMGR=2", *chunks) == [
            Urc("^RSSI:14"),
            Urc('+CMTI: "SM",3'),
            Urc("+CREG: 1"),
            Response("AT+CMGR=2", ("+CMGR: 0,,24", CMGR_PDU), Final(FinalKind.OK)),
        ]


def test_own_answers_are_not_urcs() -> None:
    assert run("AT+CREG?", b"\r\n+CREG: 0,1\r\n\r\nOK\r\n") == [
        Response("AT+CREG?", ("+CREG: 0,1",), Final(FinalKind.OK))
    ]
    assert run("AT+CPIN?", b"\r\n+CPIN: READY\r\n\r\nOK\r\n")[0].lines == ("+CPIN: READY",)  # type: ignore[union-attr]
    assert run("AT^CURC=0", b"\r\nOK\r\n") == [Response("AT^CURC=0", (), Final(FinalKind.OK))]
    assert [own_prefix(c) for c in ("AT+CREG?", "AT^CURC=0", "AT", "ATE0", "AT+CMGR=1")] == [
        "+CREG:", "^CURC:", None, None, "+CMGR:",
    ]  # fmt: skip


def test_urcs_with_a_body_and_while_idle() -> None:
    session = AtSession()
    events = session.feed(b"\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n\r\n+CMT: ,24\r\n")
    events += session.feed(CMGR_PDU.encode() + b"\r\n+QIND: SMS DONE\r\nhello\r\nOK\r\n")
    assert events == [
        Urc("RDY"),
        Urc("+CPIN: READY"),
        Urc("SMS DONE"),
        Urc("+CMT: ,24", CMGR_PDU),
        Urc("+QIND: SMS DONE"),
        Stray("hello"),
        Stray("OK"),
    ]
    assert [e.name for e in events[:5]] == ["RDY", "+CPIN", "SMS DONE", "+CMT", "+QIND"]  # type: ignore[union-attr]


def test_prompt_and_abandon() -> None:
    session = AtSession()
    session.command("AT+CMGS=10")
    assert session.feed(b"\r\n> ") == [Prompt()]
    partial = session.abandon()
    assert partial is not None
    assert partial.final.kind is FinalKind.ERROR
    assert session.running is None
    session.command("AT+CPIN?")  # Wavecom: the answer without OK
    session.feed(b"\r\n+CPIN: READY\r\n")
    assert session.abandon() == Response(
        "AT+CPIN?", ("+CPIN: READY",), Final(FinalKind.ERROR, None, "timeout")
    )


def test_one_command_at_a_time() -> None:
    session = AtSession()
    session.command("AT")
    with pytest.raises(RuntimeError):
        session.command("AT")


@given(st.binary(max_size=3000))
def test_any_bytes_give_only_events_and_a_bounded_buffer(data: bytes) -> None:
    splitter = LineSplitter()
    for item in splitter.feed(data):
        assert isinstance(item, str | Prompt)
    assert len(splitter._buffer) <= 2048
    session = AtSession()
    session.command("AT+CMGL=4")
    for event in session.feed(data):
        assert isinstance(event, Response | Urc | Prompt | Stray)


def test_a_prompt_with_a_urc_behind_it_in_one_read() -> None:
    session = AtSession()
    session.command("AT+CMGS=23")
    events = session.feed(b'\r\n> \r\n+CMTI: "SM",3\r\n')
    assert events == [Prompt(), Urc('+CMTI: "SM",3')]
    assert session.feed(b"\r\n+CMGS: 7\r\n\r\nOK\r\n") == [
        Response("AT+CMGS=23", ("+CMGS: 7",), Final(FinalKind.OK))
    ]
