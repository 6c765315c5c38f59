"""The session state machines of protocols.session and protocols.terminal_session.

Every transition of each table, and the illegal ones: what the gateway decides
(accept, NAK with code and ref_seq, close) and what a terminal may expect.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.constants import FrameType, NakCode
from protocols.errors import (
    BadCrc,
    BadMagic,
    BadTag,
    DecodeError,
    GatewayViolation,
    Malformed,
    NotAccepted,
    NotHello,
    PeerError,
    SessionViolation,
    TopicMismatch,
    UnknownTerminal,
)
from protocols.frames import (
    Ack,
    Frame,
    Heartbeat,
    Hello,
    Hourly,
    Nak,
    Presses,
    PressRecord,
    Welcome,
    decode,
    encode,
)
from protocols.session import (
    FROM_TERMINAL,
    GATEWAY_TRANSITIONS,
    Accept,
    CloseReason,
    GatewaySession,
    GatewayState,
    Refuse,
    Transport,
    ack_for,
    busy_for,
    welcome_for,
)
from protocols.terminal_session import (
    NAK_ACTIONS,
    Acked,
    NakAction,
    Naked,
    Sent,
    TerminalSession,
    TerminalState,
    Welcomed,
)
from tests.support import KEYS, keys

HELLO = Hello(1001, 0x0102, 7, 1767225600, 0, 3)
PRESSES = Presses(1001, 1767225660, 120, 0, (PressRecord(120, 1767225650, 3, 0),))
PRESSES_3 = Presses(
    1001, 1767225660, 120, 0, tuple(PressRecord(120 + i, 1767225650, 3, 0) for i in range(3))
)
HEARTBEAT = Heartbeat(1001, 1767225600, 80, -70, 0, 3600)
HOURLY = Hourly(1001, 5, 1767225600, ((1, 2, 3, 4),))
WELCOME = Welcome(1001, 1767225601, 120)
ACK = Ack(1001, FrameType.PRESSES, 120, 1767225663)
NAK = Nak(1001, NakCode.MALFORMED, 0)
ALL_FRAMES: list[Frame] = [HELLO, PRESSES, HEARTBEAT, HOURLY, WELCOME, ACK, NAK]


def tcp() -> GatewaySession:
    return GatewaySession(Transport.TCP, keys)


def opened() -> GatewaySession:
    session = tcp()
    assert session.receive(HELLO) == Accept(HELLO)
    return session


def mqtt() -> GatewaySession:
    return GatewaySession(Transport.MQTT, keys)


# ------------------------------------------------------------ the tables


def test_tables_list_what_each_transport_takes_from_a_terminal() -> None:
    assert FROM_TERMINAL[Transport.TCP] == {
        FrameType.HELLO,
        FrameType.PRESSES,
        FrameType.HEARTBEAT,
    }
    assert FROM_TERMINAL[Transport.MQTT] == {FrameType.PRESSES, FrameType.HEARTBEAT}
    for transport, states in GATEWAY_TRANSITIONS.items():
        for accepted in states.values():
            assert set(accepted) <= FROM_TERMINAL[transport]


def test_close_reasons_keep_the_strings_the_log_prints() -> None:
    assert [r.value for r in CloseReason] == [
        "idle",
        "reset",
        "eof",
        "protocol_error",
        "shutdown",
        "closed",
    ]
    assert f"{CloseReason.EOF}" == "eof"


def test_violations_are_no_decode_errors() -> None:
    assert issubclass(SessionViolation, PeerError)
    assert not issubclass(SessionViolation, DecodeError)
    assert issubclass(DecodeError, PeerError)


# ------------------------------------------------------------ gateway, TCP


def test_tcp_starts_awaiting_hello_and_hello_opens() -> None:
    session = tcp()
    states = [session.state]
    assert session.receive(HELLO) == Accept(HELLO)
    states.append(session.state)
    assert states == [GatewayState.AWAITING_HELLO, GatewayState.OPEN]
    assert session.terminal_id == 1001


@pytest.mark.parametrize("frame", [HELLO, PRESSES, HEARTBEAT])
def test_tcp_open_accepts_hello_presses_heartbeat(frame: Frame) -> None:
    session = opened()
    assert session.receive(frame) == Accept(frame)  # type: ignore[arg-type]
    assert session.state is GatewayState.OPEN


@pytest.mark.parametrize("frame", [PRESSES, HEARTBEAT, HOURLY, WELCOME, ACK, NAK])
def test_tcp_first_frame_not_hello_is_nak_not_hello_and_close(frame: Frame) -> None:
    session = tcp()
    decision = session.receive(frame)
    assert isinstance(decision, Refuse)
    assert isinstance(decision.error, NotHello)
    assert decision.reason == "NOT_HELLO"
    ref_seq = 120 if isinstance(frame, Presses) else 0
    assert decision.nak == Nak(1001, NakCode.NOT_HELLO, ref_seq)
    assert decision.close
    assert decision.error.raw == encode(frame, KEYS[1001])
    assert session.state is GatewayState.CLOSED


@pytest.mark.parametrize("frame", [HOURLY, WELCOME, ACK, NAK])
def test_tcp_open_other_types_are_unsupported_and_close(frame: Frame) -> None:
    session = opened()
    decision = session.receive(frame)
    assert isinstance(decision, Refuse)
    assert isinstance(decision.error, NotAccepted)
    assert decision.reason == "UNSUPPORTED"
    assert decision.error.reason.endswith("is not accepted from a terminal over TCP")
    assert decision.nak == Nak(1001, NakCode.UNSUPPORTED, 0)
    assert decision.close
    assert session.state is GatewayState.CLOSED


def test_tcp_nothing_is_decided_after_close() -> None:
    session = tcp()
    session.receive(PRESSES)
    with pytest.raises(RuntimeError):
        session.receive(HELLO)


def test_tcp_bad_crc_naks_and_goes_on_in_either_state() -> None:
    for session in (tcp(), opened()):
        before = session.state
        error = BadCrc("crc", raw=b"x", terminal_id=1001, frame_type=2, ref_seq=9)
        decision = session.receive(error)
        assert decision == Refuse(error, Nak(1001, NakCode.BAD_CRC, 9), close=False)
        assert session.state is before


@pytest.mark.parametrize(
    ("error", "nak"),
    [
        (BadTag("tag", terminal_id=1001, ref_seq=4), Nak(1001, NakCode.BAD_TAG, 4)),
        (UnknownTerminal("unknown", terminal_id=4242), Nak(4242, NakCode.UNKNOWN_TERMINAL, 0)),
        (BadMagic("magic"), None),
    ],
)
def test_tcp_closing_errors_close(error: DecodeError, nak: Nak | None) -> None:
    session = tcp()
    assert session.receive(error) == Refuse(error, nak, close=True)
    assert session.state is GatewayState.CLOSED


def test_tcp_naks_after_hello_carry_the_sessions_terminal_but_unknown_terminal_its_own() -> None:
    session = opened()
    crc = BadCrc("crc", terminal_id=77, ref_seq=0)
    decision = session.receive(crc)
    assert isinstance(decision, Refuse)
    assert decision.nak == Nak(1001, NakCode.BAD_CRC, 0)
    unknown = UnknownTerminal("unknown", terminal_id=4242)
    decision = session.receive(unknown)
    assert isinstance(decision, Refuse)
    assert decision.nak == Nak(4242, NakCode.UNKNOWN_TERMINAL, 0)


def test_tcp_error_with_a_nak_code_but_no_terminal_gets_no_nak() -> None:
    error = Malformed("short")
    assert tcp().receive(error) == Refuse(error, None, close=False)


def test_encode_uses_the_key_or_the_zero_tag() -> None:
    session = tcp()
    assert session.encode(WELCOME) == encode(WELCOME, KEYS[1001])
    unknown = Nak(4242, NakCode.UNKNOWN_TERMINAL, 0)
    assert session.encode(unknown) == encode(unknown, None)
    # A NAK for an unregistered id (a corrupt header) can only be UNKNOWN_TERMINAL.
    assert session.encode(Nak(4242, NakCode.BAD_CRC, 5)) == encode(unknown, None)


def test_answers() -> None:
    assert ack_for(PRESSES_3, 99) == Ack(1001, FrameType.PRESSES, 122, 99)
    assert ack_for(HEARTBEAT, 99) == Ack(1001, FrameType.HEARTBEAT, 0, 99)
    assert busy_for(PRESSES_3) == Nak(1001, NakCode.BUSY, 120)
    assert welcome_for(HELLO, 5, 6) == Welcome(1001, 5, 6)


# ------------------------------------------------------------ gateway, MQTT


@pytest.mark.parametrize("frame", [PRESSES, HEARTBEAT])
def test_mqtt_accepts_presses_and_heartbeat(frame: Frame) -> None:
    session = mqtt()
    assert session.state is GatewayState.OPEN
    assert session.receive(frame, topic_terminal=1001) == Accept(frame)  # type: ignore[arg-type]
    assert session.state is GatewayState.OPEN


@pytest.mark.parametrize("frame", [HELLO, HOURLY, WELCOME, ACK, NAK])
def test_mqtt_other_types_are_unsupported_without_close(frame: Frame) -> None:
    session = mqtt()
    raw = encode(frame, KEYS[1001])
    decision = session.receive(frame, raw=raw, topic_terminal=1001)
    assert isinstance(decision, Refuse)
    assert isinstance(decision.error, NotAccepted)
    assert decision.error.raw == raw
    assert decision.error.reason.endswith("over MQTT")
    assert decision.nak == Nak(1001, NakCode.UNSUPPORTED, 0)
    assert not decision.close
    assert session.state is GatewayState.OPEN


@pytest.mark.parametrize("topic_terminal", [1002, None])
def test_mqtt_topic_mismatch_is_refused_without_answer(topic_terminal: int | None) -> None:
    decision = mqtt().receive(HELLO, raw=b"raw", topic_terminal=topic_terminal)
    assert isinstance(decision, Refuse)
    assert isinstance(decision.error, TopicMismatch)
    assert decision.reason == "TOPIC_MISMATCH"
    assert (decision.nak, decision.close, decision.error.raw) == (None, False, b"raw")


@pytest.mark.parametrize(
    ("error", "topic_terminal", "nak"),
    [
        (BadCrc("c", terminal_id=1001, ref_seq=3), 1001, Nak(1001, NakCode.BAD_CRC, 3)),
        (BadCrc("c", terminal_id=1001, ref_seq=3), 1002, None),  # another terminal's topic
        (BadCrc("c", terminal_id=4242), 4242, None),  # not registered
        (UnknownTerminal("u", terminal_id=4242), 4242, None),
        (BadTag("t", terminal_id=1001), 1001, Nak(1001, NakCode.BAD_TAG, 0)),
        (BadMagic("m"), 1001, None),
    ],
)
def test_mqtt_errors_are_naked_only_when_tied_to_a_known_terminal(
    error: DecodeError, topic_terminal: int, nak: Nak | None
) -> None:
    session = mqtt()
    assert session.receive(error, topic_terminal=topic_terminal) == Refuse(error, nak, close=False)
    assert session.state is GatewayState.OPEN


# ------------------------------------------------------------ terminal, TCP


def welcomed() -> TerminalSession:
    session = TerminalSession(Transport.TCP, 1001)
    assert session.send(HELLO) is None
    assert session.receive(WELCOME) == Welcomed(WELCOME)
    return session


def test_terminal_tcp_hello_then_welcome_opens() -> None:
    session = TerminalSession(Transport.TCP, 1001)
    states = [session.state]
    session.send(HELLO)
    states.append(session.state)
    session.receive(WELCOME)
    states.append(session.state)
    assert states == [TerminalState.CONNECTED, TerminalState.AWAITING_WELCOME, TerminalState.OPEN]


@pytest.mark.parametrize("frame", [PRESSES, HEARTBEAT, HOURLY, ACK])
def test_terminal_tcp_must_send_hello_first(frame: Frame) -> None:
    with pytest.raises(NotHello):
        TerminalSession(Transport.TCP, 1001).send(frame)


@pytest.mark.parametrize("frame", [HELLO, PRESSES, HEARTBEAT])
def test_terminal_tcp_sends_nothing_while_awaiting_welcome(frame: Frame) -> None:
    session = TerminalSession(Transport.TCP, 1001)
    session.send(HELLO)
    with pytest.raises(NotAccepted):
        session.send(frame)


@pytest.mark.parametrize("frame", [HELLO, HOURLY, WELCOME, ACK, NAK])
def test_terminal_tcp_open_sends_only_presses_and_heartbeat(frame: Frame) -> None:
    with pytest.raises(NotAccepted):
        welcomed().send(frame)


@pytest.mark.parametrize(
    ("code", "action"),
    [(NakCode.UNKNOWN_TERMINAL, NakAction.STOP), (NakCode.UNSUPPORTED, NakAction.FIRMWARE_BUG)],
)
def test_terminal_tcp_nak_instead_of_welcome_closes(code: NakCode, action: NakAction) -> None:
    session = TerminalSession(Transport.TCP, 1001)
    session.send(HELLO)
    nak = Nak(1001, code, 0)
    assert session.receive(nak) == Naked(nak, None, action)
    assert session.state is TerminalState.CLOSED


@pytest.mark.parametrize("frame", [ACK, HELLO, PRESSES])
def test_terminal_tcp_anything_else_instead_of_welcome_is_a_violation(frame: Frame) -> None:
    session = TerminalSession(Transport.TCP, 1001)
    session.send(HELLO)
    with pytest.raises(GatewayViolation, match="instead of WELCOME"):
        session.receive(frame)
    assert session.state is TerminalState.CLOSED


def test_terminal_tcp_answers_match_in_order() -> None:
    session = welcomed()
    first = session.send(PRESSES_3, at=1.0)
    second = session.send(HEARTBEAT, at=2.0)
    assert first == Sent(FrameType.PRESSES, 120, 122, 1.0)
    assert second == Sent(FrameType.HEARTBEAT, 0, 0, 2.0)
    assert (first.covered, second.covered) == (3, 0)
    assert session.in_flight == (first, second)
    assert session.oldest == first
    ack = Ack(1001, FrameType.PRESSES, 122, 5)
    assert session.receive(ack) == Acked(ack, first)
    busy = Nak(1001, NakCode.BUSY, 0)
    assert session.receive(busy) == Naked(busy, second, NakAction.RETRY_LATER)
    assert not session.in_flight
    assert session.state is TerminalState.OPEN


def test_terminal_tcp_nak_with_a_wrong_ref_seq_is_a_problem_not_a_violation() -> None:
    session = welcomed()
    sent = session.send(PRESSES_3)
    nak = Nak(1001, NakCode.BAD_CRC, 7)
    naked = session.receive(nak)
    problem = "NAK BAD_CRC ref_seq 7 for PRESSES seq 120..122"
    assert naked == Naked(nak, sent, NakAction.RETRY, problem)
    assert not naked.closes


@pytest.mark.parametrize(
    "answer",
    [
        Ack(1001, FrameType.PRESSES, 121, 5),  # not the last seq
        Ack(1001, FrameType.HEARTBEAT, 0, 5),  # not the type sent
        Ack(1001, 0x7F, 122, 5),
    ],
)
def test_terminal_tcp_ack_that_does_not_match_is_a_violation(answer: Ack) -> None:
    session = welcomed()
    session.send(PRESSES_3)
    with pytest.raises(GatewayViolation, match=r"for PRESSES seq 120\.\.122"):
        session.receive(answer)
    assert session.state is TerminalState.CLOSED


def test_terminal_tcp_answer_with_nothing_in_flight_is_a_violation() -> None:
    with pytest.raises(GatewayViolation, match="no frame in flight"):
        welcomed().receive(ACK)


@pytest.mark.parametrize("frame", [HELLO, PRESSES, WELCOME, HOURLY])
def test_terminal_tcp_open_expects_only_ack_or_nak(frame: Frame) -> None:
    session = welcomed()
    session.send(HEARTBEAT)
    with pytest.raises(GatewayViolation, match="where ACK or NAK was due"):
        session.receive(frame)


def test_terminal_rejects_undecodable_and_other_terminals_frames() -> None:
    with pytest.raises(GatewayViolation, match="undecodable frame"):
        welcomed().receive(BadCrc("crc"))
    with pytest.raises(GatewayViolation, match="for terminal 1002"):
        welcomed().receive(Ack(1002, FrameType.PRESSES, 1, 1))


def test_nak_actions_cover_every_code() -> None:
    assert set(NAK_ACTIONS) == set(NakCode)
    assert Naked(Nak(1001, NakCode.BAD_TAG, 0), None, NakAction.FIRMWARE_BUG).closes
    assert not Naked(Nak(1001, NakCode.MALFORMED, 0), None, NakAction.FIRMWARE_BUG).closes


# ------------------------------------------------------------ terminal, MQTT


def test_terminal_mqtt_is_open_and_sends_no_hello() -> None:
    session = TerminalSession(Transport.MQTT, 1001)
    assert session.state is TerminalState.OPEN
    assert session.send(PRESSES) is None  # answers match by seq, not in order
    assert session.send(HEARTBEAT) is None
    for frame in (HELLO, HOURLY, ACK, NAK, WELCOME):
        with pytest.raises(NotAccepted):
            session.send(frame)


def test_terminal_mqtt_takes_acks_and_naks_unmatched() -> None:
    session = TerminalSession(Transport.MQTT, 1001)
    assert session.receive(ACK) == Acked(ACK, None)
    beat = Ack(1001, FrameType.HEARTBEAT, 0, 5)
    assert session.receive(beat) == Acked(beat, None)
    busy = Nak(1001, NakCode.BUSY, 3)
    assert session.receive(busy) == Naked(busy, None, NakAction.RETRY_LATER)


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (Ack(1001, FrameType.HEARTBEAT, 4, 5), "ACK of HEARTBEAT with acked_seq 4"),
        (Ack(1001, FrameType.HELLO, 0, 5), "ACK of type 0x01"),
        (WELCOME, "WELCOME where ACK or NAK was due"),
        (HELLO, "HELLO where ACK or NAK was due"),
    ],
)
def test_terminal_mqtt_violations_do_not_close(frame: Frame, match: str) -> None:
    session = TerminalSession(Transport.MQTT, 1001)
    with pytest.raises(GatewayViolation, match=match):
        session.receive(frame)
    assert session.state is TerminalState.OPEN


def test_the_two_sides_agree_on_a_whole_tcp_session() -> None:
    """A terminal session and a gateway session, talking through real bytes."""
    gateway = tcp()
    terminal = TerminalSession(Transport.TCP, 1001)
    terminal.send(HELLO)
    accepted = gateway.receive(decode(encode(HELLO, KEYS[1001]), keys))
    assert isinstance(accepted, Accept)
    welcome = welcome_for(HELLO, 10, 120)
    assert isinstance(terminal.receive(decode(gateway.encode(welcome), keys)), Welcomed)
    terminal.send(PRESSES_3)
    assert gateway.receive(PRESSES_3) == Accept(PRESSES_3)
    answer = decode(gateway.encode(ack_for(PRESSES_3, 11)), keys)
    acked = terminal.receive(answer)
    assert isinstance(acked, Acked)
    assert acked.sent is not None
    assert acked.sent.last_seq == 122


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(ALL_FRAMES), max_size=12))
def test_tcp_any_sequence_accepts_only_after_hello_and_stops_at_the_first_close(
    frames: list[Frame],
) -> None:
    session = tcp()
    greeted = False
    for frame in frames:
        decision = session.receive(frame)
        if isinstance(decision, Accept):
            assert greeted or isinstance(frame, Hello)
            greeted = True
            continue
        assert decision.close
        assert session.state is GatewayState.CLOSED
        assert isinstance(decision.error, NotHello if not greeted else NotAccepted)
        break
    else:
        assert session.state is (GatewayState.OPEN if greeted else GatewayState.AWAITING_HELLO)
