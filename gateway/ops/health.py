"""The health port: ``/healthz``, ``/readyz``, ``/metrics`` and ``/status``.

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

Served by uvicorn on ``health.listen``, on the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.errors import GatewayError
from gateway.intake.fleet_status import FleetStatus
from gateway.intake.outbox import Backlog
from gateway.ops.views import ModemView, Observed, OutboxView
from gateway.registry.config import parse_listen
from gateway.stores import CentralStore


class Operations(Protocol):
    """What the health port reads of the gateway's operations side (gateway.ops.operations)."""

    @property
    def observed(self) -> Observed: ...
    @property
    def modem(self) -> ModemView | None: ...
    @property
    def backlog(self) -> Backlog | None: ...
    @property
    def store(self) -> StoreProbe: ...
    @property
    def fleet(self) -> FleetStatus: ...
    @property
    def now(self) -> Callable[[], float]: ...
    def readiness(self) -> tuple[bool, dict[str, Check]]: ...
    def ready_now(self) -> bool: ...
    async def refresh_backlog(self) -> None: ...
    def loop_lag_s(self) -> float: ...
    def log_suppressed(self) -> int: ...


log = structlog.get_logger("gateway.health")

MIN_FREE_BYTES = 4 * 1024 * 1024  # below this the outbox cannot be trusted to commit


@dataclass(slots=True)
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.detail}


class StoreProbe:
    """Probes the central store with an empty read; remembers since when it is down."""

    def __init__(
        self,
        store: CentralStore,
        *,
        budget_s: float,
        interval_s: float,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.budget_s = budget_s
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._clock = clock
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.probes = 0

    async def run(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.interval_s)

    async def probe_once(self) -> bool:
        self.probes += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                # An empty time window: a real query through the store's own connections.
                rows = self._store.presses(0, 0)
                try:
                    async for _ in rows:
                        break
                finally:
                    aclose = getattr(rows, "aclose", None)  # an async generator: end it now
                    if aclose is not None:
                        await aclose()
        except (GatewayError, TimeoutError, OSError) as exc:
            error = str(exc) or type(exc).__name__
            if self.down_since is None:
                self.down_since = self._clock()
                log.warning("store_unreachable", error=error, budget_s=self.budget_s)
            self.last_error = error
            return False
        if self.down_since is not None:
            log.info("store_reachable", down_for_s=round(self._clock() - self.down_since, 1))
        self.down_since = None
        self.last_error = None
        return True

    @property
    def up(self) -> bool:
        return self.down_since is None

    def down_for_s(self) -> float:
        return 0.0 if self.down_since is None else self._clock() - self.down_since

    def check(self) -> Check:
        if self.down_since is None:
            return Check(True, {"probes": self.probes})
        down = self.down_for_s()
        return Check(
            down < self.budget_s,
            {
                "down_for_s": round(down, 1),
                "budget_s": self.budget_s,
                "error": self.last_error,
                "note": "presses wait in the outbox while the store is down",
            },
        )


class OutboxProbe:
    """Writable: no failed commit since the last good one, and room on its file system."""

    def __init__(self, outbox: OutboxView, data_dir: Path) -> None:
        self._outbox = outbox
        self._data_dir = data_dir
        self._commits = 0
        self._busy = 0
        self._failing = False

    def check(self) -> Check:
        outbox = self._outbox
        if outbox.commits > self._commits:
            self._failing = False
        if outbox.busy_errors > self._busy and outbox.commits == self._commits:
            self._failing = True
        self._commits, self._busy = outbox.commits, outbox.busy_errors
        data_dir = self._data_dir
        detail: dict[str, Any] = {"busy_errors": outbox.busy_errors}
        ok = not self._failing
        if self._failing:
            detail["error"] = "the last commits failed (disk full, I/O error or budget reached)"
        try:
            stat = os.statvfs(data_dir)
        except OSError as exc:
            return Check(False, {**detail, "error": f"{data_dir}: {exc}"})
        free = stat.f_bavail * stat.f_frsize
        detail["free_bytes"] = free
        if free < MIN_FREE_BYTES:
            ok = False
            detail["error"] = f"only {free} bytes free in {data_dir}"
        elif not os.access(data_dir, os.W_OK):
            ok = False
            detail["error"] = f"{data_dir} is not writable"
        return Check(ok, detail)


# --- metrics ------------------------------------------------------------------------


class GatewayCollector(Collector):
    """Every metric, read from the running gateway at scrape time."""

    def __init__(self, ops: Operations) -> None:
        self._ops = ops

    def describe(self) -> Iterable[Metric]:
        return []  # collected only when scraped

    def collect(self) -> Iterator[Metric]:
        ops = self._ops
        gw = ops.observed
        counters = gw.counters
        presses = CounterMetricFamily(
            "smiley_presses", "Presses committed to the outbox, by transport", labels=["transport"]
        )
        for transport, n in sorted(counters.by_transport.items()):
            presses.add_metric([transport], n)
        yield presses
        naks = CounterMetricFamily(
            "smiley_naks", "NAKs sent to terminals, by code", labels=["code"]
        )
        for code, n in sorted(counters.naks.items()):
            naks.add_metric([code], n)
        yield naks
        quarantined = CounterMetricFamily(
            "smiley_quarantined",
            "Records and frames kept in quarantine, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(counters.quarantined.items()):
            quarantined.add_metric([reason], n)
        yield quarantined
        yield CounterMetricFamily(
            "smiley_heartbeats", "HEARTBEAT frames received", value=counters.heartbeats
        )
        yield CounterMetricFamily(
            "smiley_outbox_commits", "Outbox transactions committed", value=gw.outbox.commits
        )
        yield CounterMetricFamily(
            "smiley_outbox_busy_errors",
            "Outbox commits that failed (NAK BUSY)",
            value=gw.outbox.busy_errors,
        )
        yield CounterMetricFamily(
            "smiley_forwarded_rows",
            "Rows forwarded to the central store",
            value=gw.forwarder.forwarded,
        )
        yield CounterMetricFamily(
            "smiley_forward_failures", "Failed forwarding attempts", value=gw.forwarder.failures
        )
        backlog = ops.backlog
        if backlog is not None:
            depth = GaugeMetricFamily(
                "smiley_outbox_depth", "Rows in the outbox not yet forwarded", labels=["kind"]
            )
            depth.add_metric(["press"], backlog.presses)
            depth.add_metric(["reject"], backlog.rejects)
            yield depth
            oldest = backlog.oldest_received_at_ms
            age = max(0.0, ops.now() - oldest / 1000) if oldest is not None else 0.0
            yield GaugeMetricFamily(
                "smiley_outbox_oldest_age_seconds", "Age of the oldest row in the outbox", value=age
            )
            yield GaugeMetricFamily(
                "smiley_forward_lag_seconds",
                "How far forwarding trails: the oldest unforwarded row's age",
                value=age,
            )
        yield GaugeMetricFamily(
            "smiley_store_up", "1 if the central store answered the last probe", value=ops.store.up
        )
        yield GaugeMetricFamily(
            "smiley_store_down_seconds",
            "How long the store has been down",
            value=ops.store.down_for_s(),
        )
        yield GaugeMetricFamily("smiley_ready", "1 when /readyz says ready", value=ops.ready_now())
        up = GaugeMetricFamily(
            "smiley_transport_up", "1 when the transport is up", labels=["transport"]
        )
        if gw.tcp is not None:
            up.add_metric(["tcp"], gw.tcp.listening)
        if gw.mqtt is not None:
            up.add_metric(["mqtt"], gw.mqtt.connected.is_set())
        if ops.modem is not None:
            up.add_metric(["sms"], ops.modem.ready)
        yield up
        if gw.tcp is not None:
            yield GaugeMetricFamily(
                "smiley_tcp_connections", "Open terminal connections", value=gw.tcp.connections
            )
        if ops.modem is not None:
            registered = ops.modem.registered
            signal = ops.modem.signal_dbm
            yield GaugeMetricFamily(
                "smiley_modem_registered",
                "1 when the modem is registered on the mobile network",
                value=float("nan") if registered is None else float(registered),
            )
            yield GaugeMetricFamily(
                "smiley_modem_signal_dbm",
                "The modem's received signal strength",
                value=float("nan") if signal is None else float(signal),
            )
        yield GaugeMetricFamily(
            "smiley_event_loop_lag_seconds",
            "Lateness of the last loop probe",
            value=ops.loop_lag_s(),
        )
        yield CounterMetricFamily(
            "smiley_log_lines_suppressed",
            "Repeated warnings dropped by the log rate limiter",
            value=ops.log_suppressed(),
        )
        yield from _terminal_metrics(ops)


def _terminal_metrics(ops: Operations) -> Iterator[Metric]:
    last_seen = GaugeMetricFamily(
        "smiley_terminal_last_seen_timestamp_seconds",
        "When the terminal last sent anything (Unix time)",
        labels=["terminal_id", "transport"],
    )
    battery = GaugeMetricFamily(
        "smiley_terminal_battery_percent",
        "Battery level from the last HEARTBEAT (255: mains powered)",
        labels=["terminal_id"],
    )
    signal = GaugeMetricFamily(
        "smiley_terminal_signal_dbm", "Signal from the last HEARTBEAT", labels=["terminal_id"]
    )
    queued = GaugeMetricFamily(
        "smiley_terminal_queued", "Records the terminal holds unsent", labels=["terminal_id"]
    )
    offset = GaugeMetricFamily(
        "smiley_terminal_clock_offset_seconds",
        "Terminal clock minus gateway clock",
        labels=["terminal_id"],
    )
    for status in ops.fleet.terminals.values():
        tid = str(status.terminal_id)
        if status.last_contact is not None:
            last_seen.add_metric([tid, status.transport or ""], status.last_contact)
        if status.battery_pct is not None:
            battery.add_metric([tid], status.battery_pct)
        if status.signal_dbm is not None:
            signal.add_metric([tid], status.signal_dbm)
        if status.queued is not None:
            queued.add_metric([tid], status.queued)
        if status.clock_offset_s is not None:
            offset.add_metric([tid], status.clock_offset_s)
    yield from (last_seen, battery, signal, queued, offset)


def metrics_registry(ops: Operations) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(ops))
    return registry


# --- HTTP ---------------------------------------------------------------------------


def health_app(ops: Operations) -> Starlette:
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

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/status", status),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HealthServer:
    """uvicorn serving ``app`` on a socket bound before start (so the port is known)."""

    def __init__(self, app: Starlette, listen: str) -> None:
        self._app = app
        self._listen = listen
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        host, port = parse_listen("health.listen", self._listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, reuse_port=False)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
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
