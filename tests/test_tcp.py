"""TCP ingest over real loopback sockets: every answer and NAK case of the spec."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

from gateway.stores import StoredPress, StoredReject
from protocols.constants import FrameType, NakCode
from protocols.frames import Ack, Hello, Nak, Presses, PressRecord, Welcome, encode
from tests.conftest import GatewayHarness
from tests.support import KEYS, VECTOR_HEX, RawTerminal, seal

HELLO_1001 = Hello(1001, 0x0102, 7, 1767225600, 0, 0)


async def stored(h: GatewayHarness) -> list[StoredPress]:
    await h.forwarded()
    assert h.gateway is not None
    return [p async for p in h.gateway.store.presses(None, None)]


async def quarantined(h: GatewayHarness) -> list[StoredReject]:
    await h.forwarded()
    assert h.gateway is not None
    return [r async for r in h.gateway.store.rejected(None, None)]


async def hello(h: GatewayHarness, frame: Hello = HELLO_1001) -> tuple[RawTerminal, Welcome]:
    t = await RawTerminal.connect(h.port)
    await t.send_frame(frame)
    welcome = await t.receive()
    assert isinstance(welcome, Welcome)
    return t, welcome


async def test_hello_presses_heartbeat_vectors(harness: GatewayHarness) -> None:
    harness.now = 1767225663.5
    t = await RawTerminal.connect(harness.port)
    await t.send(VECTOR_HEX["hello"])
    assert await t.receive() == Welcome(1001, 1767225663, 0)
    await t.send(VECTOR_HEX["presses"])
    assert await t.receive() == Ack(1001, FrameType.PRESSES, 122, 1767225663)
    await t.send(VECTOR_HEX["heartbeat"])
    assert await t.receive() == Ack(1001, FrameType.HEARTBEAT, 0, 1767225663)
    await t.close()
    rows = await stored(harness)
    assert [(p.seq, p.occurred_at, p.button, p.followup) for p in rows] == [
        (120, 1767225605, 4, 0),
        (121, 1767225609, 3, 2),
        (122, 1767225661, 1, 0),
    ]
    assert all(p.precision == "second" and not p.clock_corrected for p in rows)
    assert rows[0].local_time == "2026-01-01T02:00:05+02:00"  # Europe/Helsinki in winter
    assert all(p.transport == "tcp" and p.count == 1 for p in rows)


async def test_welcome_next_seq_is_one_past_highest_committed(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    h = make_harness()
    await h.start()
    t, welcome = await hello(h)
    assert welcome.next_seq == 0
    await t.send(VECTOR_HEX["presses"])  # seqs 120..122
    assert isinstance(await t.receive(), Ack)
    await t.close()
    t, welcome = await hello(h)
    assert welcome.next_seq == 123
    await t.close()
    await h.stop()
    await h.start()  # survives a restart, and after the outbox was forwarded and emptied
    t, welcome = await hello(h)
    assert welcome.next_seq == 123
    await t.close()
    await h.stop()


async def test_pipelined_frames_answered_in_order(harness: GatewayHarness) -> None:
    t, _ = await hello(harness)
    frames = [
        Presses(1001, 1767225600, 10 * i, 0, (PressRecord(10 * i, 1767225600 + i, 1 + i % 4, 0),))
        for i in range(20)
    ]
    await t.send(b"".join(encode(f, KEYS[1001]) for f in frames))
    answers = [await t.receive() for _ in frames]
    assert [a.acked_seq for a in answers] == [10 * i for i in range(20)]
    await t.close()
    assert len(await stored(harness)) == 20


async def test_duplicate_frames_are_acked_and_stored_once(harness: GatewayHarness) -> None:
    t, _ = await hello(harness)
    for _ in range(3):
        await t.send(VECTOR_HEX["presses"])
        assert (await t.receive()).acked_seq == 122
    await t.close()
    t, _ = await hello(harness)  # and again on a new connection
    await t.send(VECTOR_HEX["presses"])
    assert (await t.receive()).acked_seq == 122
    await t.close()
    assert [p.seq for p in await stored(harness)] == [120, 121, 122]


async def test_bad_crc_is_nakked_and_the_connection_goes_on(harness: GatewayHarness) -> None:
    t, _ = await hello(harness)
    await t.send(VECTOR_HEX["bad_crc"])
    assert await t.receive() == Nak(1001, NakCode.BAD_CRC, 120)
    await t.send(VECTOR_HEX["presses"])
    assert (await t.receive()).acked_seq == 122
    await t.close()
    reasons = [r.row.reason for r in await quarantined(harness)]
    assert reasons == ["BAD_CRC"]


async def test_bad_tag_is_nakked_and_closed(harness: GatewayHarness) -> None:
    t, _ = await hello(harness)
    await t.send(VECTOR_HEX["bad_tag"])
    assert await t.receive() == Nak(1001, NakCode.BAD_TAG, 120)
    assert await t.closed_by_peer()
    rejects = await quarantined(harness)
    assert [r.row.reason for r in rejects] == ["BAD_TAG"]
    assert rejects[0].row.raw == VECTOR_HEX["bad_tag"]
    assert rejects[0].row.transport == "tcp"
    assert rejects[0].row.peer.startswith("127.0.0.1:")


async def test_unknown_terminal_gets_zero_tag_nak_and_close(harness: GatewayHarness) -> None:
    t = await RawTerminal.connect(harness.port)
    await t.send(encode(Hello(4242, 1, 1, 1767225600, 0, 0), bytes(16)))
    data = await asyncio.wait_for(t.reader.read(100), 5)
    assert data == VECTOR_HEX["nak_unknown_terminal"]
    assert await t.closed_by_peer()


async def test_malformed_presses_nakked_with_ref_seq(harness: GatewayHarness) -> None:
    t, _ = await hello(harness)
    await t.send(VECTOR_HEX["presses_count_mismatch"])
    assert await t.receive() == Nak(1001, NakCode.MALFORMED, 1)
    await t.send_frame(HELLO_1001)  # still open
    assert isinstance(await t.receive(), Welcome)
    await t.close()


async def test_unsupported_version_nakked_and_closed(harness: GatewayHarness) -> None:
    t = await RawTerminal.connect(harness.port)
    await t.send(VECTOR_HEX["unsupported_version"])
    assert await t.receive() == Nak(1001, NakCode.UNSUPPORTED, 0)
    assert await t.closed_by_peer()


async def test_unknown_type_nakked_unsupported_and_closed(harness: GatewayHarness) -> None:
    t, _ = await hello(harness)
    await t.send(seal(0x44, 1001, bytes(6), KEYS[1001]))  # a type the spec does not define
    assert await t.receive() == Nak(1001, NakCode.UNSUPPORTED, 0)
    assert await t.closed_by_peer()


async def test_frame_before_hello_is_not_hello_and_closes(harness: GatewayHarness) -> None:
    t = await RawTerminal.connect(harness.port)
    await t.send(VECTOR_HEX["presses"])
    assert await t.receive() == Nak(1001, NakCode.NOT_HELLO, 120)
    assert await t.closed_by_peer()
    assert await stored(harness) == []
    assert [r.row.reason for r in await quarantined(harness)] == ["NOT_HELLO"]


async def test_bad_magic_closes_without_answer(harness: GatewayHarness) -> None:
    t, _ = await hello(harness)
    await t.send(b"GET / HTTP/1.1\r\n\r\n")
    assert await t.closed_by_peer()
    assert [r.row.reason for r in await quarantined(harness)] == ["BAD_MAGIC"]


async def test_length_over_4096_closes(harness: GatewayHarness) -> None:
    t, _ = await hello(harness)
    await t.send(b"SM\x01\x02\x00\x00\x03\xe9\x10\x01")
    assert await t.closed_by_peer()
    assert [r.row.reason for r in await quarantined(harness)] == ["TOO_LONG"]


async def test_invalid_records_quarantined_and_frame_acked(harness: GatewayHarness) -> None:
    t, _ = await hello(harness)
    await t.send(VECTOR_HEX["presses_bad_records"])
    assert (await t.receive()).acked_seq == 132
    await t.close()
    assert [p.seq for p in await stored(harness)] == [132]
    rejects = {r.row.seq: r.row for r in await quarantined(harness)}
    assert set(rejects) == {130, 131}
    assert "button 5" in rejects[130].detail
    assert "followup 17" in rejects[131].detail
    assert rejects[130].raw == bytes.fromhex("6955b9460500")
    t, welcome = await hello(harness)
    assert welcome.next_seq == 133
    await t.close()


async def test_clock_unsynced_records_are_corrected(harness: GatewayHarness) -> None:
    harness.now = 1767226200.0  # the vector's note: received at 2026-01-01T00:10:00Z
    t, _ = await hello(harness, Hello(1002, 1, 1, 946684830, 1, 2))
    await t.send(VECTOR_HEX["presses_clock_unsynced"])
    assert (await t.receive()).acked_seq == 1
    await t.close()
    rows = await stored(harness)
    assert [(p.occurred_at, p.clock_corrected) for p in rows] == [
        (1767226180, True),
        (1767226190, True),
    ]


async def test_future_record_corrects_the_whole_frame(harness: GatewayHarness) -> None:
    harness.now = 1767225600.0
    t, _ = await hello(harness)
    records = (
        PressRecord(0, 1767225600 + 1000, 1, 0),  # ahead by 1000 s: the clock is wrong
        PressRecord(1, 1767225600 + 1010, 2, 0),
    )
    await t.send_frame(Presses(1001, 1767225600 + 1020, 0, 0, records))
    assert (await t.receive()).acked_seq == 1
    # and one within the 300 s tolerance is taken as sent
    await t.send_frame(Presses(1001, 1767225600, 2, 0, (PressRecord(2, 1767225600 + 299, 3, 0),)))
    assert (await t.receive()).acked_seq == 2
    await t.close()
    rows = await stored(harness)
    assert [(p.occurred_at, p.clock_corrected) for p in rows] == [
        (1767225580, True),
        (1767225590, True),
        (1767225899, False),
    ]


async def test_idle_connection_is_closed(make_harness: Callable[..., GatewayHarness]) -> None:
    h = make_harness()
    h.config_path.write_text(
        h.config_path.read_text().replace("[tcp]", "[tcp]\nidle_timeout_s = 0.3"),
        encoding="utf-8",
    )
    await h.start()
    t, _ = await hello(h)
    assert await t.closed_by_peer(timeout=5)
    await h.stop()


async def test_many_concurrent_terminals_and_a_stuck_one(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    h = make_harness()
    await h.start()
    stuck = await RawTerminal.connect(h.port)
    await stuck.send(VECTOR_HEX["hello"][:15])  # half a frame, then silence
    clients = [await hello(h) for _ in range(200)]
    for i, (t, _) in enumerate(clients):
        record = PressRecord(1000 + i, 1767225600, 4, 0)
        await t.send_frame(Presses(1001, 1767225600, 1000 + i, 0, (record,)))
    for i, (t, _) in enumerate(clients):
        assert (await t.receive()).acked_seq == 1000 + i
        await t.close()
    await stuck.close()
    assert len(await stored(h)) == 200
    await h.stop()


async def test_tls(
    make_harness: Callable[..., GatewayHarness], tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    h = make_harness()
    h.config_path.write_text(
        h.config_path.read_text().replace(
            "[tcp]", f"[tcp]\ntls_cert = '{cert}'\ntls_key = '{key}'"
        ),
        encoding="utf-8",
    )
    await h.start()
    client_tls = ssl.create_default_context(cafile=str(cert))
    t = await RawTerminal.connect(h.port, ssl=client_tls, server_hostname="127.0.0.1")
    await t.send(VECTOR_HEX["hello"])
    assert isinstance(await t.receive(), Welcome)
    await t.send(VECTOR_HEX["presses"])
    assert (await t.receive()).acked_seq == 122
    await t.close()
    plain = await RawTerminal.connect(h.port)  # plain TCP is not accepted on a TLS port
    await plain.send(VECTOR_HEX["hello"])
    assert await plain.closed_by_peer()
    assert [p.seq for p in await stored(h)] == [120, 121, 122]
    await h.stop()
