"""The web smiley listener (``[web]``): the page a browser opens and the presses it sends.

``GET /w/{slug}`` is the page (gateway/transports/web_page.py); ``POST
/w/{slug}/presses`` takes a browser's presses (gateway/transports/web_request.py)
and answers ``{"acked": N}`` only after the outbox committed them, N the
highest seq of that client committed so far. A refused request gets its 4xx
with the reason in JSON and a quarantine row; over the rate limit of its
address, 429 with Retry-After. This listener faces the public, so it runs
apart from the API and the health port, bounded like them (http_server.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.errors import ConfigError, OutboxBusy, WebPressRefused
from gateway.http_server import QuietServer, bounded_config
from gateway.intake.ingest import Ingest
from gateway.intake.web_ledger import WebLedger, WebTaken
from gateway.registry.config import Config, WebSection, parse_listen, parse_rate_limit
from gateway.registry.terminals import Registry
from gateway.rows import RejectRow
from gateway.timekeeping import UtcOffsets
from gateway.transports.web_page import not_found_page, render_page
from gateway.transports.web_request import parse_request, place

log = structlog.get_logger("gateway.web")

MAX_BODY = 32 * 1024  # 100 presses take about 10 KiB
CLIENT_MEMORY_S = 30 * 86400
"""How long the outbox remembers a browser's highest seq after its last request."""
MAX_ADDRESSES = 10_000
"""Rate buckets kept; the least recently seen address is forgotten first (memory bound)."""
_PAGE_SECURITY = {
    # The page needs nothing from elsewhere: a script or style injected into it could not load.
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline';"
    " style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'",
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
}


class AddressLimiter:
    """A token bucket per client address, ``count`` per ``period_s``, at most MAX_ADDRESSES."""

    def __init__(
        self, count: int, period_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._count = float(count)
        self._rate = count / period_s
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, address: str) -> float:
        """0 if a request may go now, else the seconds until one may."""
        now = self._clock()
        tokens, at = self._buckets.pop(address, (self._count, now))
        tokens = min(self._count, tokens + (now - at) * self._rate)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate
        self._buckets[address] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        if len(self._buckets) > MAX_ADDRESSES:
            self._buckets.popitem(last=False)
        return wait


@dataclass(slots=True)
class WebCounters:
    requests: int = 0
    presses: int = 0
    resent: int = 0
    rate_limited: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # by quarantine reason


class WebSmileys:
    """The ASGI application of ``[web]`` and its counters; :meth:`serve` runs it."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        ingest: Ingest,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        section = config.web
        if section is None:
            raise ConfigError("web", "the [web] section is needed to serve web smileys")
        self._config = config
        self._section: WebSection = section
        self._registry = registry
        self._ingest = ingest
        self._clock = clock
        self._limiter = AddressLimiter(*parse_rate_limit("web.rate_limit", section.rate_limit))
        self._offsets = {w: UtcOffsets(registry.zone_for(w)) for w in registry.web_smileys}
        self.counters = WebCounters()
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/w/{slug}", self.page, methods=["GET"]),
                Route("/w/{slug}/presses", self.presses, methods=["POST"]),
            ]
        )

    async def page(self, request: Request) -> Response:
        web = self._registry.web_smiley(request.path_params["slug"])
        if web is None:
            return HTMLResponse(not_found_page(), 404, headers=_PAGE_SECURITY)
        survey = self._registry.surveys[web.survey]
        ui = request.query_params.get("ui", "digital")
        kiosk = request.query_params.get("kiosk") == "1"
        return HTMLResponse(render_page(web, survey, ui=ui, kiosk=kiosk), headers=_PAGE_SECURITY)

    async def presses(self, request: Request) -> Response:
        web = self._registry.web_smiley(request.path_params["slug"])
        if web is None:
            return JSONResponse({"error": "UNKNOWN_WEB_SMILEY", "detail": "no such page"}, 404)
        address = request.client.host if request.client is not None else "?"
        wait = self._limiter.take(address)
        if wait > 0:
            self.counters.rate_limited += 1
            return JSONResponse(
                {"error": "RATE_LIMITED", "detail": f"try again in {math.ceil(wait)} s"},
                429, headers={"retry-after": str(math.ceil(wait))},
            )  # fmt: skip
        self.counters.requests += 1
        body = await request.body()
        received_at = self._clock()
        try:
            try:
                parsed = parse_request(body, self._registry.surveys[web.survey])
            except WebPressRefused as refused:
                await self._quarantine(refused, web.id, address, body, received_at)
                return JSONResponse({"error": refused.reason, "detail": refused.detail},
                                    refused.status)  # fmt: skip
            presses = place(parsed, web.id, self._offsets[web.id], received_at)

            async def take(ledger: WebLedger) -> WebTaken:
                received_ms = int(received_at * 1000)
                return await ledger.take(web.id, parsed.client, presses, received_ms)

            taken = await self._ingest.web(take)
        except OutboxBusy as exc:
            log.warning("web_outbox_busy", error=str(exc), web_smiley_id=web.id)
            return JSONResponse({"error": "BUSY", "detail": "try again shortly"}, 503,
                                headers={"retry-after": "5"})  # fmt: skip
        self.counters.presses += taken.new
        self.counters.resent += taken.resent
        return JSONResponse({"acked": taken.acked})

    async def _quarantine(
        self, refused: WebPressRefused, web_id: int, address: str, body: bytes, at: float
    ) -> None:
        row = RejectRow(int(at * 1000), "web", address, web_id, None, refused.reason,
                        refused.detail, body)  # fmt: skip
        await self._ingest.commit((), (row,))
        self.counters.refused[refused.reason] = self.counters.refused.get(refused.reason, 0) + 1
        log.info("web_press_refused", reason=refused.reason, detail=refused.detail,
                 web_smiley_id=web_id)  # fmt: skip

    async def forget_old_clients(self) -> int:
        """Drop the seqs of browsers silent for CLIENT_MEMORY_S; return how many."""
        before_ms = int((self._clock() - CLIENT_MEMORY_S) * 1000)

        async def forget(ledger: WebLedger) -> int:
            return await ledger.forget_clients_before(before_ms)

        return await self._ingest.web_upkeep(forget)

    async def start(self) -> None:
        """Bind ``[web] listen``; raise ConfigError if it cannot. Then :meth:`run` serves."""
        section = self._section
        host, port = parse_listen("web.listen", section.listen)
        tls = {}
        if section.tls_cert is not None and section.tls_key is not None:
            tls = {"ssl_certfile": self._config.path(section.tls_cert),
                   "ssl_keyfile": self._config.path(section.tls_key)}  # fmt: skip
        server = QuietServer(bounded_config(
            self.app, max_body=MAX_BODY, max_connections=section.max_connections, host=host,
            port=port, **tls,
        ))  # fmt: skip
        task = asyncio.create_task(_run(server, section.listen), name="web-server")
        bound = asyncio.create_task(server.listening.wait())
        await asyncio.wait({task, bound}, return_when=asyncio.FIRST_COMPLETED)
        bound.cancel()
        if task.done() or not server.started:
            server.should_exit = True
            await task  # raises why it could not start
            raise ConfigError("web.listen", f"cannot listen on {section.listen}")
        self._server, self._task = server, task
        log.info("web_listening", listen=section.listen, tls=bool(tls),
                 web_smileys=len(self._registry.web_smileys))  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; requests in hand get the time their commit takes."""
        server, task = self._server, self._task
        if server is None or task is None:
            raise ConfigError("web", "WebSmileys.start() must come before run()")
        waiter = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            server.should_exit = True
            await task


async def _run(server: QuietServer, listen: str) -> None:
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits when it cannot bind; a gateway must not
        raise ConfigError("web.listen", f"cannot listen on {listen}") from None
