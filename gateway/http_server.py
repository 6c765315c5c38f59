"""uvicorn as the gateway runs it: on its event loop, never taking over the process's
signals, and with its memory bounded whatever a client sends.

The bounds (issue #15): a request's head at most :data:`MAX_HEAD_BYTES` (h11
refuses one still incomplete past it with 400), its body at most the
listener's ``max_body`` (413 as soon as the length or the bytes go over, see
:class:`BodyLimit`), at most ``max_connections`` connections and requests at once
(503 beyond), idle keep-alive connections closed after a few seconds. uvicorn
itself stops reading a connection whose body the application has not taken
(its flow control), so a slow application never makes a buffer grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_HEAD_BYTES = 16 * 1024
KEEP_ALIVE_S = 5


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM and SIGINT to the gateway.

    ``listening`` is set once it has bound its sockets, so a caller can tell a
    server that started from one that failed to bind.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


def bounded_config(
    app: ASGIApp, *, max_body: int, max_connections: int, **options: Any
) -> uvicorn.Config:
    """The uvicorn configuration of every gateway listener (``options``: host, port…)."""
    return uvicorn.Config(
        BodyLimit(app, max_body),
        http="h11",  # its head limit is what bounds a request before the application sees it
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        log_level="warning",
        server_header=False,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        limit_concurrency=max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        **options,
    )


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 and not read on.

    A declared Content-Length over the bound is refused before the application
    runs; a chunked body is counted as it arrives and refused when it goes over.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max):
            await self._refuse(send)
            return
        seen = 0
        answered = refused = False

        async def counted_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max:
                    # Answer now and let the application see the client go: whatever
                    # it sends after this (an error page) goes nowhere.
                    refused = True
                    if not answered:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: Message) -> None:
            nonlocal answered
            if refused:
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counted_receive, watched_send)
        except Exception:
            if not refused:
                raise
            # The application failed on the disconnect it was shown; the 413 is sent.

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": f"request body over {self._max} bytes"}).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                        (b"content-length", str(len(body)).encode())],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})
