"""The health port: ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` and the console.

- ``/healthz``: 200 while the process answers (liveness).
- ``/readyz``: 200 when the gateway can take and keep presses, else 503; the
  JSON body lists each check and what fails. Checks: the outbox is writable
  (no failed commit since the last good one, space on its file system), the
  central store answered a probe or has been down for less than
  ``health.store_outage_budget_s`` (presses wait in the outbox meanwhile),
  each configured transport is up (TCP listening, MQTT connected, the modem
  when SMS is wired in), and the gateway is not shutting down.
- ``/metrics``: Prometheus text from a registry of this gateway's own (never
  the process-wide default one), read from the live objects at each scrape.
- ``/status``: the fleet status as JSON (``?flagged=1``: only terminals with a
  flag; ``?company=ID``: only that company's terminals), for operators and for
  the API to reuse.
- ``/`` and ``/console/data``: the operations console (gateway/ops/console.py).

Served by uvicorn on ``health.listen``, on the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import socket

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.http_server import QuietServer, bounded_config
from gateway.ops.console import ConsoleSource, console_routes
from gateway.ops.metrics import OperationsView, metrics_registry
from gateway.registry.config import HealthSection, parse_listen

log = structlog.get_logger("gateway.health")

# A scraper, a probe and an operator's curl: a few connections, never a crowd.
MAX_CONNECTIONS = 32

# --- HTTP ---------------------------------------------------------------------------


def health_app(ops: OperationsView) -> Starlette:
    registry = metrics_registry(ops)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"alive": True})

    async def readyz(_: Request) -> Response:
        ready, checks = ops.readiness()
        body = {"ready": ready, "checks": {n: c.to_json() for n, c in checks.items()}}
        body["failing"] = [name for name, c in checks.items() if not c.ok]
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(_: Request) -> Response:
        await ops.refresh_backlog()
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def status(request: Request) -> Response:
        body = ops.fleet.to_json(ops.now())
        if request.query_params.get("flagged") in ("1", "true", "yes"):
            body["terminals"] = [t for t in body["terminals"] if t["flags"]]
        company = request.query_params.get("company")
        if company is not None:  # one company's own terminals (what the API shows a client)
            registry = ops.observed.registry
            ours = {
                t.id
                for t in registry.terminals.values()
                if (loc := registry.locations.get(t.location)) is not None
                and loc.company == company
            }
            body["terminals"] = [t for t in body["terminals"] if t["terminal_id"] in ours]
        return JSONResponse(body)

    console = ConsoleSource(
        fleet=ops.fleet,
        registry=ops.observed.registry,
        modem=ops.modem,
        history=lambda: ops.history,
        now=ops.now,
    )
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/status", status),
            *console_routes(console, ops.observed.health or HealthSection()),
        ]
    )


class HealthServer:
    """uvicorn serving ``app`` on a socket bound before start (so the port is known)."""

    def __init__(self, app: Starlette, listen: str) -> None:
        self._app = app
        self._listen = listen
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        host, port = parse_listen("health.listen", self._listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, reuse_port=False)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = bounded_config(
            self._app, max_body=0, max_connections=MAX_CONNECTIONS, timeout_graceful_shutdown=2
        )
        self._server = QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="health-http")
        log.info("health_listening", listen=self._listen, port=self.port)

    async def close(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, 10)
        except TimeoutError:
            self._task.cancel()
            await asyncio.wait({self._task})  # raises only if close() itself is cancelled
