"""The simulated modem sending: AT+CMGS in PDU mode, what people receive, status
reports stored (+CDSI) or routed (+CDS) as +CNMI asks, and the failures a lab sets."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.modem import ModemCore
from firmware_sim.modem_network import read_submit, status_report_pdu
from protocols.sms_pdu import DeliveryOutcome, StatusReport, decode_pdu
from protocols.sms_submit import SubmitPart, encode_submit
from tests.test_sim_modem import FakeClock, at, core_of, quiet

PERSON = "+32470123401"


def send(core: ModemCore, part: SubmitPart) -> bytes:
    assert at(core, f"AT+CMGS={part.length}") == b"\r\n> "
    core.receive(part.pdu.encode() + b"\x1a")
    return core.take_output()


def ready(ds: int) -> tuple[ModemCore, FakeClock]:
    core, clock = core_of()
    quiet(core)
    assert at(core, f"AT+CNMI=2,1,0,{ds},0") == b"\r\nOK\r\n"
    core.network.report_delay_s = 5.0
    return core, clock


def later(core: ModemCore, clock: FakeClock, seconds: float) -> bytes:
    clock.now += seconds
    core.tick()
    return core.take_output()


def test_a_message_is_received_and_its_report_stored() -> None:
    core, clock = ready(ds=2)
    (part,) = encode_submit("How was your visit? 0-10", PERSON).parts
    assert send(core, part) == b"\r\n+CMGS: 1\r\n\r\nOK\r\n"
    assert [(m.destination, m.text, m.mrs) for m in core.network.received] == [
        (PERSON, "How was your visit? 0-10", (1,))
    ]
    assert core.next_deadline() == clock.now + 5.0
    assert later(core, clock, 4.9) == b""
    assert later(core, clock, 0.1) == b'\r\n+CDSI: "SR",1\r\n'
    read = at(core, "AT+CMGR=1").decode()
    pdu = read.split("\r\n")[2]
    report = decode_pdu(pdu)
    assert isinstance(report, StatusReport)
    assert (report.message_reference, report.recipient) == (1, PERSON)
    assert report.outcome is DeliveryOutcome.DELIVERED
    assert "+CMGL: 1," in at(core, "AT+CMGL=4").decode()
    assert at(core, "AT+CMGD=1") == b"\r\nOK\r\n"
    assert core.stored_now == 0
    assert core.counters.reports_stored == 1


def test_a_routed_report_is_not_stored() -> None:
    core, clock = ready(ds=1)
    send(core, encode_submit("hi", PERSON).parts[0])
    out = later(core, clock, 5.0).decode()
    match = re.fullmatch(r"\r\n\+CDS: (\d+)\r\n([0-9A-F]+)\r\n", out)
    assert match is not None
    report = decode_pdu(match.group(2))
    assert isinstance(report, StatusReport)
    octets = bytes.fromhex(match.group(2))
    assert int(match.group(1)) == len(octets) - 1 - octets[0]  # the TPDU length
    assert core.stored_now == 0
    assert core.counters.reports_routed == 1


def test_no_report_when_ds_is_0_or_none_requested() -> None:
    core, clock = ready(ds=0)
    send(core, encode_submit("hi", PERSON).parts[0])
    assert later(core, clock, 10) == b""
    assert core.counters.reports_dropped == 1
    core, clock = ready(ds=2)
    send(core, encode_submit("hi", PERSON, status_report=False).parts[0])
    assert later(core, clock, 10) == b""
    assert core.next_deadline() is None or core.next_deadline() != clock.now + 5.0


def test_a_concatenated_message_is_received_whole_with_a_report_per_part() -> None:
    core, clock = ready(ds=2)
    text = "€" * 100 + "ü" * 3  # GSM 7-bit, 203 septets: two parts
    parts = encode_submit(text, PERSON, concat_reference=77).parts
    answers = [send(core, part) for part in parts]
    assert answers == [b"\r\n+CMGS: 1\r\n\r\nOK\r\n", b"\r\n+CMGS: 2\r\n\r\nOK\r\n"]
    assert [(m.text, m.mrs) for m in core.network.received] == [(text, (1, 2))]
    out = later(core, clock, 5.0)
    assert out.count(b"+CDSI:") == 2
    refs = []
    for index in (1, 2):
        report = decode_pdu(at(core, f"AT+CMGR={index}").decode().split("\r\n")[2])
        assert isinstance(report, StatusReport)
        refs.append(report.message_reference)
    assert sorted(refs) == [1, 2]


def test_ucs2_is_received_as_sent() -> None:
    core, _ = ready(ds=2)
    text = "Comment était votre visite ? 😀 " * 4  # UCS2 (ê is not GSM 7-bit), 2 parts
    for part in encode_submit(text, PERSON, concat_reference=3).parts:
        send(core, part)
    assert [m.text for m in core.network.received] == [text]


def test_failures_transient_permanent_and_unreachable() -> None:
    core, clock = ready(ds=2)
    core.network.fail_next(332)
    core.network.refused["+32470999999"] = 21
    core.network.unreachable.add("+32470888888")
    part = encode_submit("hi", PERSON).parts[0]
    assert send(core, part) == b"\r\n+CMS ERROR: 332\r\n"  # network timeout: try again
    assert send(core, part) == b"\r\n+CMGS: 1\r\n\r\nOK\r\n"
    refused = encode_submit("hi", "+32470999999").parts[0]
    assert send(core, refused) == b"\r\n+CMS ERROR: 21\r\n"
    lost = encode_submit("hi", "+32470888888").parts[0]
    assert send(core, lost) == b"\r\n+CMGS: 2\r\n\r\nOK\r\n"
    assert [m.destination for m in core.network.received] == [PERSON]
    assert core.network.refusals == [(PERSON, 332), ("+32470999999", 21)]
    later(core, clock, 5.0)
    outcomes = {}
    for index in (1, 2):
        report = decode_pdu(at(core, f"AT+CMGR={index}").decode().split("\r\n")[2])
        assert isinstance(report, StatusReport)
        outcomes[report.recipient] = report.outcome
    assert outcomes == {
        PERSON: DeliveryOutcome.DELIVERED,
        "+32470888888": DeliveryOutcome.FAILED_PERMANENT,
    }
    at(core, "AT+CMEE=2")
    core.network.fail_next(332)
    assert send(core, part) == b"\r\n+CMS ERROR: network timeout\r\n"


def test_escape_cancels_and_a_bad_pdu_is_refused() -> None:
    core, _ = ready(ds=2)
    part = encode_submit("hi", PERSON).parts[0]
    assert at(core, f"AT+CMGS={part.length}") == b"\r\n> "
    core.receive(part.pdu[:10].encode() + b"\x1b")
    assert core.take_output() == b"\r\nOK\r\n"
    assert core.network.received == []
    assert at(core, f"AT+CMGS={part.length + 1}") == b"\r\n> "
    core.receive(part.pdu.encode() + b"\x1a")
    assert core.take_output() == b"\r\n+CMS ERROR: 304\r\n"  # the length does not match
    assert core.counters.submitted == []


def test_reports_wait_while_storage_is_full() -> None:
    core, clock = core_of(capacity=1)
    quiet(core)
    at(core, "AT+CNMI=2,1,0,2,0")
    core.network.report_delay_s = 1.0
    for part in (encode_submit("a", PERSON).parts[0], encode_submit("b", PERSON).parts[0]):
        send(core, part)
    assert later(core, clock, 1.0) == b'\r\n+CDSI: "SR",1\r\n'
    at(core, "AT+CMGD=1")
    out = later(core, clock, 60.0)
    assert out == b'\r\n+CDSI: "SR",1\r\n'  # the second, once there was room


def test_the_network_reads_submits_on_its_own() -> None:
    part = read_submit("0011000B919471123456F80000AA05E8329BFD06", mr=9)
    assert (part.destination, part.text, part.report_requested, part.concat) == (
        "+49172143658",
        "hello",
        False,
        None,
    )
    report = decode_pdu(status_report_pdu(9, "+49172143658", 0x43))
    assert isinstance(report, StatusReport)
    assert report.outcome is DeliveryOutcome.FAILED_PERMANENT


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=500))
def test_what_the_gateway_encodes_the_network_reads_whole(text: str) -> None:
    """The simulator's own SUBMIT reader, apart from protocols, reads every encoding."""
    core, _ = ready(ds=0)
    for part in encode_submit(text, PERSON, concat_reference=5).parts:
        assert send(core, part).startswith(b"\r\n+CMGS: ")
    assert [(m.destination, m.text) for m in core.network.received] == [(PERSON, text)]
