"""What a client can make an HTTP listener of the gateway hold is bounded (issue #15).

The listeners (API, health, and the web page's) are built by
gateway/http_server.py's bounded_config; these tests run it over real sockets
with a small application, and the health port of a real gateway process.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from firmware_sim.harness import GatewayProcess, free_port
from gateway.http_server import MAX_HEAD_BYTES, QuietServer, bounded_config
from tests.support import write_config

MAX_BODY = 1000
MAX_CONNECTIONS = 8


async def echo_length(request: Request) -> JSONResponse:
    return JSONResponse({"length": len(await request.body())})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = Starlette(routes=[Route("/", echo_length, methods=["GET", "POST"])])
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    server = QuietServer(bounded_config(app, max_body=MAX_BODY, max_connections=MAX_CONNECTIONS))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await server.listening.wait()
    yield sock.getsockname()[1]
    server.should_exit = True
    await task


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request``, then read the answer until the server closes or 5 s pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.readuntil(b"\r\n\r\n") + await reader.read(4096)
    finally:
        writer.close()


async def until_answered(port: int, wanted: int) -> None:
    """Ask until the answer is ``wanted`` (the server sees connections open or close a
    moment after the client does); TimeoutError, failing the test, after 5 s."""
    request = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n"
    async with asyncio.timeout(5):
        while status(await exchange(port, request)) != wanted:  # noqa: ASYNC110 - polls a server
            await asyncio.sleep(0.02)


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_a_body_within_the_bound_reaches_the_application(port: int) -> None:
    body = b"x" * MAX_BODY
    answer = await exchange(
        port, b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert status(answer) == 200
    assert answer.endswith(b'{"length":1000}')


async def test_a_declared_length_over_the_bound_is_refused_before_the_body_is_sent(
    port: int,
) -> None:
    # 10 MB announced, none of it sent: the answer comes anyway, so nothing was read.
    answer = await exchange(port, b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 10000000\r\n\r\n")
    assert status(answer) == 413
    assert b"request body over 1000 bytes" in answer


async def test_a_chunked_body_is_refused_as_it_goes_over(port: int) -> None:
    chunk = b"%x\r\n%s\r\n" % (600, b"y" * 600)
    # Two chunks of 600 (over 1,000), and the body never ends: the count refuses it.
    answer = await exchange(
        port, b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 2
    )
    assert status(answer) == 413


async def test_a_head_that_grows_past_the_bound_is_refused(port: int) -> None:
    # A head that never ends (no blank line): refused once it is over the bound.
    filler = b"x-filler: " + b"a" * (MAX_HEAD_BYTES + 100) + b"\r\n"
    answer = await exchange(port, b"GET / HTTP/1.1\r\nhost: t\r\n" + filler)
    assert status(answer) == 400


async def test_connections_over_the_bound_get_503_and_the_listener_recovers(port: int) -> None:
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
    try:
        # Once the server has taken the held connections, one more request is refused.
        await until_answered(port, 503)
    finally:
        for _, writer in held:
            writer.close()
    await until_answered(port, 200)


async def test_the_gateway_health_port_takes_no_body(tmp_path: Path) -> None:
    health, tcp = free_port(), free_port()
    config = write_config(tmp_path, port=tcp, extra=f'[health]\nlisten = "127.0.0.1:{health}"\n')
    async with GatewayProcess(config, tcp):
        ok = await exchange(health, b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        refused = await exchange(
            health, b"POST /healthz HTTP/1.1\r\nhost: t\r\ncontent-length: 5000000\r\n\r\n"
        )
    assert status(ok) == 200
    assert status(refused) == 413
