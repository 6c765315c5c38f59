"""Running the API: uvicorn on ``[api] listen`` until a stop event, over its own store reader."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from gateway.api.app import create_app
from gateway.api.db import Reader, open_reader
from gateway.api.tokens import ensure_table
from gateway.backoff import Backoff
from gateway.errors import ConfigError, StoreError
from gateway.http_server import QuietServer, bounded_config
from gateway.registry.config import ApiSection, Config, parse_listen, parse_rate_limit
from gateway.stores import open_store

log = structlog.get_logger("gateway.api")

# The API only reads (GET): a request has no business with a body.
MAX_QUERY_BODY = 8 * 1024


async def open_api_reader(config: Config) -> Reader:
    """The store's schema brought up to date (as ``migrate`` does), then a reader on it."""
    url = config.store_url()
    store = await open_store(url)
    await store.close()
    db = await open_reader(url)
    try:
        await ensure_table(db)
    except BaseException:
        await db.close()
        raise
    return db


async def serve_api(
    config: Config,
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    *,
    wait_for_store: bool = False,
) -> None:
    """Serve ``[api]`` until ``stop`` is set; ``started`` is set once it listens.

    ``wait_for_store``: a store that cannot be opened is retried (capped
    backoff) until it can or ``stop`` is set, as inside ``run``, where the
    gateway keeps taking presses while its store is down. Without it the
    error is raised (the ``api`` command fails at once, saying why).
    """
    section = config.api
    if section is None:
        raise ConfigError("api", "the [api] section is needed to serve the API")
    db = await _open(config, stop) if wait_for_store else await open_api_reader(config)
    if db is None:
        return
    try:
        server = build_server(config, section, db)
        task = asyncio.create_task(_run(server, section.listen))
        try:
            listening = asyncio.create_task(server.listening.wait())
            await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
            listening.cancel()
            if task.done() or not server.started:
                await task  # raises why it could not start
                raise ConfigError("api.listen", f"the API server did not start on {section.listen}")
            log.info("api_listening", listen=section.listen, tls=section.tls_cert is not None)
            if started is not None:
                started.set()
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        finally:
            server.should_exit = True
            await task
    finally:
        await db.close()


async def _run(server: QuietServer, listen: str) -> None:
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits when it cannot bind; a gateway must not
        raise ConfigError("api.listen", f"cannot listen on {listen}") from None


async def _open(config: Config, stop: asyncio.Event) -> Reader | None:
    backoff = Backoff(initial=1.0, cap=60.0)
    while not stop.is_set():
        try:
            return await open_api_reader(config)
        except StoreError as exc:
            delay = backoff.next_delay()
            log.warning("api_store_unavailable", error=str(exc), retry_in_s=round(delay, 1))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return None


def build_server(config: Config, section: ApiSection, db: Reader) -> QuietServer:
    host, port = parse_listen("api.listen", section.listen)
    app = create_app(
        db, parse_rate_limit("api.rate_limit", section.rate_limit), refresh_s=section.refresh_s
    )
    tls = {}
    if section.tls_cert is not None and section.tls_key is not None:
        # A plain-HTTP request to a TLS port fails its handshake: nothing is answered.
        tls = {"ssl_certfile": config.path(section.tls_cert),
               "ssl_keyfile": config.path(section.tls_key)}  # fmt: skip
    server_config = bounded_config(
        app, max_body=MAX_QUERY_BODY, max_connections=section.max_connections, host=host,
        port=port, **tls,
    )  # fmt: skip
    return QuietServer(server_config)
