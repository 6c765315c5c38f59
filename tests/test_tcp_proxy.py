"""The TCP listener behind a load balancer (``tcp.proxy_protocol``), over real sockets.

The PROXY header names the terminal's real address for the logs and the
quarantine; a v2 LOCAL connection (a health check) is closed without a row or
a warning; anything else first is refused with a quarantine row and a log line.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.errors import ConfigError
from gateway.registry.config import load_config, validate_config
from gateway.transports.tcp_proxy import read_proxy_header
from protocols.frames import Ack, Welcome
from protocols.proxy_protocol import V2_SIGNATURE, BadProxyHeader
from tests.conftest import GatewayHarness
from tests.support import VECTOR_HEX, RawTerminal
from tests.test_tcp import quarantined, stored

V1_HEADER = b"PROXY TCP4 203.0.113.9 192.0.2.1 40001 7700\r\n"
MakeHarness = Callable[..., GatewayHarness]
LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"  # what HAProxy's check-send-proxy sends


def v2_header(
    src: bytes, sport: int, dst: bytes = bytes([192, 0, 2, 1]), dport: int = 7700
) -> bytes:
    block = src + dst + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(block)) + block


async def proxied(make_harness: MakeHarness) -> GatewayHarness:
    """A gateway whose TCP listener takes a PROXY header first."""
    harness = make_harness()
    text = harness.config_path.read_text(encoding="utf-8")
    harness.config_path.write_text(
        text.replace("[tcp]\n", "[tcp]\nproxy_protocol = true\n"), encoding="utf-8"
    )
    await harness.start()
    return harness


async def test_v1_and_v2_headers_then_the_terminal_s_session(make_harness: MakeHarness) -> None:
    harness = await proxied(make_harness)
    try:
        for header in (V1_HEADER, v2_header(bytes([203, 0, 113, 10]), 40002)):
            t = await RawTerminal.connect(harness.port)
            # byte by byte: the header may arrive in pieces
            for byte in header:
                await t.send(bytes([byte]))
            await t.send(VECTOR_HEX["hello"] + VECTOR_HEX["presses"])
            assert isinstance(await t.receive(), Welcome)
            assert isinstance(await t.receive(), Ack)
            await t.send(VECTOR_HEX["bad_crc"])  # quarantined, under the terminal's address
            await t.receive()
            await t.close()
        rows = await quarantined(harness)
        assert sorted((r.row.reason, r.row.peer) for r in rows) == [
            ("BAD_CRC", "203.0.113.10:40002"),
            ("BAD_CRC", "203.0.113.9:40001"),
        ]
        assert [p.seq for p in await stored(harness)] == [120, 121, 122]
    finally:
        await harness.stop()


async def test_a_health_check_is_closed_without_a_row_or_a_warning(
    make_harness: MakeHarness,
) -> None:
    harness = await proxied(make_harness)
    try:
        with capture_logs() as logs:
            t = await RawTerminal.connect(harness.port)
            await t.send(LOCAL)
            assert await t.closed_by_peer()
            probe = await RawTerminal.connect(harness.port)  # a plain TCP probe: nothing sent
            await probe.close()
            t = await RawTerminal.connect(harness.port)  # and a relayed terminal after them
            await t.send(V1_HEADER + VECTOR_HEX["hello"])
            assert isinstance(await t.receive(), Welcome)
            await t.close()
        assert await quarantined(harness) == []
        assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
    finally:
        await harness.stop()


@pytest.mark.parametrize(
    "first",
    [
        VECTOR_HEX["hello"],  # a terminal that reached the gateway past the balancer
        b"PROXY TCP4 203.0.113.9 192.0.2.1 40001\r\n",
        V2_SIGNATURE + b"\x21\x11\x00\x04abcd",  # INET with too short a block
        b"PROXY " + b"9" * 150,
    ],
)
async def test_no_header_is_refused_with_a_quarantine_row_and_a_log_line(
    make_harness: MakeHarness, first: bytes
) -> None:
    harness = await proxied(make_harness)
    try:
        with capture_logs() as logs:
            t = await RawTerminal.connect(harness.port)
            own = f"127.0.0.1:{t.writer.get_extra_info('sockname')[1]}"
            await t.send(first)
            assert await t.closed_by_peer()
        rows = await quarantined(harness)
        assert [(r.row.reason, r.row.peer) for r in rows] == [("BAD_PROXY_HEADER", own)]
        assert first.startswith(rows[0].row.raw)
        assert rows[0].row.raw
        refused = [e for e in logs if e["event"] == "proxy_header_refused"]
        assert len(refused) == 1
        assert refused[0]["log_level"] == "warning"
        assert await stored(harness) == []
    finally:
        await harness.stop()


async def test_the_header_must_arrive_within_the_timeout() -> None:
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()
    server = await asyncio.start_server(lambda r, w: accepted.put_nowait(r), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PROXY TCP4 ")  # and no more
        reader = await accepted.get()
        with pytest.raises(BadProxyHeader, match=r"within 0\.2 s") as caught:
            await read_proxy_header(reader, timeout_s=0.2)
        assert caught.value.raw == b"PROXY TCP4 "
        writer.close()
    finally:
        server.close()


def test_proxy_protocol_with_tls_on_the_listener_is_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    cert.write_text("x", encoding="utf-8")
    key.write_text("x", encoding="utf-8")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[tcp]\nproxy_protocol = true\ntls_cert = "{cert}"\ntls_key = "{key}"\n', "utf-8"
    )
    with pytest.raises(ConfigError, match=r"tcp\.proxy_protocol"):
        validate_config(load_config(config, env={}))
    config.write_text("[tcp]\nproxy_protocol = true\n", "utf-8")
    validated = load_config(config, env={})
    validate_config(validated)
    assert validated.tcp is not None
    assert validated.tcp.proxy_protocol is True
