"""A TCP frame cut short by the connection's close is kept: quarantine reason TRUNCATED.

Every byte boundary of the header and body of a real frame, then EOF or a
reset: one quarantine row per connection, with the bytes exactly as sent and
the peer (issue 15, spec section 5: nothing a terminal sends is dropped).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from protocols.errors import Truncated
from protocols.stream import FrameStream
from tests.conftest import GatewayHarness
from tests.support import VECTOR_HEX, RawTerminal, keys
from tests.test_tcp import quarantined

HELLO = VECTOR_HEX["hello"]
PRESSES = VECTOR_HEX["presses"]


def cuts(frame: bytes) -> list[bytes]:
    """The frame cut after each byte of its header and body: 1 .. len - 1 bytes."""
    return [frame[:n] for n in range(1, len(frame))]


def peer_of(terminal: RawTerminal) -> str:
    host, port = terminal.writer.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


def reset(terminal: RawTerminal) -> None:
    """Close with a RST instead of a FIN (SO_LINGER 0)."""
    sock = terminal.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    terminal.writer.transport.abort()


def test_stream_end_keeps_every_byte_of_a_frame_cut_short() -> None:
    for cut in cuts(PRESSES):
        stream = FrameStream(keys)
        assert stream.feed(cut) == []
        truncated = stream.end()
        assert isinstance(truncated, Truncated)
        assert (truncated.raw, truncated.name, truncated.nak_code) == (cut, "TRUNCATED", None)
        header_read = len(cut) >= 10
        assert truncated.terminal_id == (1001 if header_read else None)
        assert stream.closed
        assert stream.feed(PRESSES) == []


def test_stream_end_after_whole_frames_or_a_fatal_error_has_nothing_left() -> None:
    stream = FrameStream(keys)
    assert len(stream.feed(HELLO + PRESSES)) == 2
    assert stream.end() is None
    garbage = FrameStream(keys)
    assert len(garbage.feed(b"GARBAGE")) == 1  # BAD_MAGIC: kept by the error itself
    assert garbage.end() is None


async def test_first_frame_cut_at_every_byte_then_eof(harness: GatewayHarness) -> None:
    expected = []
    for cut in cuts(HELLO):
        t = await RawTerminal.connect(harness.port)
        await t.send(cut)
        expected.append((peer_of(t), cut))
        t.writer.write_eof()
        assert await t.closed_by_peer()
        await t.close()
    rows = [r.row for r in await quarantined(harness)]
    assert all(r.reason == "TRUNCATED" and r.transport == "tcp" for r in rows)
    assert sorted((r.peer, r.raw) for r in rows) == sorted(expected)


async def test_frame_after_hello_cut_at_every_byte_then_eof_or_reset(
    harness: GatewayHarness,
) -> None:
    expected = []
    for close in ("eof", "reset"):
        for cut in cuts(PRESSES):
            t = await RawTerminal.connect(harness.port)
            # One write: the WELCOME shows the gateway read the cut bytes with the HELLO.
            await t.send(HELLO + cut)
            await t.receive()
            expected.append((peer_of(t), cut))
            if close == "eof":
                t.writer.write_eof()
                assert await t.closed_by_peer()
                await t.close()
            else:
                reset(t)
    await wait_for_rows(harness, len(expected))
    rows = [r.row for r in await quarantined(harness)]
    assert all(r.reason == "TRUNCATED" and r.terminal_id in (None, 1001) for r in rows)
    assert sorted((r.peer, r.raw) for r in rows) == sorted(expected)
    assert all(r.terminal_id == 1001 for r in rows if len(r.raw) >= 10)


async def test_first_frame_cut_then_reset(harness: GatewayHarness) -> None:
    expected = []
    for cut in (HELLO[:1], HELLO[:9], HELLO[:10], HELLO[:-1]):
        t = await RawTerminal.connect(harness.port)
        await t.send(cut)
        expected.append((peer_of(t), cut))
        # Linux hands a reader the bytes queued before a RST, then the reset.
        reset(t)
    await wait_for_rows(harness, len(expected))
    rows = [r.row for r in await quarantined(harness)]
    assert sorted((r.peer, r.raw) for r in rows) == sorted(expected)


async def test_whole_frames_then_eof_leave_no_row(harness: GatewayHarness) -> None:
    t = await RawTerminal.connect(harness.port)
    await t.send(HELLO)
    await t.receive()
    t.writer.write_eof()
    assert await t.closed_by_peer()
    await t.close()
    assert await quarantined(harness) == []


async def test_frame_cut_short_by_the_idle_timeout_is_kept(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    h = make_harness()
    h.config_path.write_text(
        h.config_path.read_text().replace("[tcp]", "[tcp]\nidle_timeout_s = 0.3"),
        encoding="utf-8",
    )
    await h.start()
    t = await RawTerminal.connect(h.port)
    await t.send(HELLO + PRESSES[:15])
    await t.receive()
    assert await t.closed_by_peer(timeout=5)
    rows = [r.row for r in await quarantined(h)]
    assert [(r.reason, r.peer, r.raw) for r in rows] == [("TRUNCATED", peer_of(t), PRESSES[:15])]
    await t.close()
    await h.stop()


async def test_frame_cut_short_by_the_gateways_shutdown_is_kept(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    h = make_harness()
    await h.start()
    t = await RawTerminal.connect(h.port)
    await t.send(HELLO + PRESSES[:25])
    await t.receive()
    peer = peer_of(t)
    await h.stop()
    await t.close()
    await h.start()  # the row was committed before the stop; forwarded now
    rows = [r.row for r in await quarantined(h)]
    assert [(r.reason, r.peer, r.raw) for r in rows] == [("TRUNCATED", peer, PRESSES[:25])]
    await h.stop()


async def wait_for_rows(harness: GatewayHarness, count: int, timeout: float = 10.0) -> None:
    """Wait until the gateway has kept ``count`` refused inputs (the resets are not waited on)."""
    assert harness.gateway is not None
    async with asyncio.timeout(timeout):
        while len(await quarantined(harness)) < count:  # noqa: ASYNC110 (polls the store)
            await asyncio.sleep(0.02)
