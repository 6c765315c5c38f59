"""What keeps a gateway operable unattended: systemd notify, health port, fleet status.

The composition root (:func:`gateway.app.run`) makes one :class:`Operations`
per running gateway and calls, in order::

    await ops.start()    # after the transports listen: READY=1, health port, housekeeping
    ops.stopping()       # on the way down: STOPPING=1, /readyz answers 503
    await ops.close()    # after the gateway shut down: last status save, tasks ended

Its tasks are its own and never stop the gateway: a failure here is logged,
and a hung event loop is systemd's to restart (no WATCHDOG=1 goes out).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog

from gateway.errors import GatewayError
from gateway.intake.fleet_status import STATUS_FILE, Thresholds, load_status, save_status
from gateway.intake.outbox import Backlog
from gateway.ops.health import HealthServer, health_app
from gateway.ops.history import HISTORY_FILE, HistoryRing, HistorySampler
from gateway.ops.log_events import configured_limiter, emit_summaries
from gateway.ops.probes import Check, OutboxProbe, StoreProbe
from gateway.ops.views import ModemView, Observed
from gateway.ops.watchdog import LoopLagProbe, LoopWatchdog, Notifier, install_hang_hook
from gateway.registry.config import HealthSection
from gateway.supervisor import Supervisor

log = structlog.get_logger("gateway.operations")

HOUSEKEEPING_S = 5.0


class Operations:
    """The operations side of one running gateway.

    ``observed.modem``, the SMS transport's status (for example
    ``gateway.transports.modem_status.ModemStatus``), adds an ``sms`` readiness
    check and the ``smiley_modem_signal_dbm`` and ``smiley_modem_registered`` metrics.
    """

    def __init__(
        self,
        observed: Observed,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.observed = observed
        self.modem: ModemView | None = observed.modem
        self.now = clock
        self.section = observed.health or HealthSection()
        s = self.section
        self.fleet = observed.fleet
        self.fleet.limits = Thresholds(s.silent_after_s, s.low_battery_pct, s.clock_drift_s)
        self._env = os.environ if env is None else env
        self.notifier = Notifier.from_env(self._env) if s.watchdog else Notifier(None)
        self.store = StoreProbe(
            observed.store,
            budget_s=s.store_outage_budget_s,
            interval_s=max(0.05, s.probe_interval_s),
        )
        self.outbox = OutboxProbe(observed.outbox, observed.data_dir)
        self.backlog: Backlog | None = None
        self.status_path = observed.data_dir / STATUS_FILE
        self.server: HealthServer | None = None
        self.watchdog: LoopWatchdog | None = None
        self.lag = LoopLagProbe()
        self.history: HistoryRing | None = None
        self._sampler: HistorySampler | None = None
        self._limiter = configured_limiter()
        self._parts = Supervisor()  # its own: a failure here never stops the gateway
        self._stopping = False
        self._was_ready: bool | None = None

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self._restore_status()
        self.fleet.known(self.observed.registry.terminals)
        interval = self.notifier.watchdog_interval_s
        if interval is not None:
            self.watchdog = LoopWatchdog(self.notifier, interval_s=interval)
            self._spawn(self.watchdog.run(), "watchdog")
        else:
            self._spawn(self.lag.run(), "loop-lag")
        self._spawn(self.store.run(), "store-probe")
        self._spawn(self._housekeeping(), "housekeeping")
        if self.observed.health is not None:
            try:  # the app reads the console's password file: a failure here is the port's
                server = HealthServer(health_app(self), self.section.listen)
                await server.start()
            except OSError as exc:  # presses matter more than the health port: go on without
                log.error("health_server_failed", listen=self.section.listen, error=str(exc))
            else:
                self.server = server
        await self._open_history()  # after the port: the console reads it once it is there
        install_hang_hook(self._env)
        self.notifier.ready("serving")

    def stopping(self) -> None:
        self._stopping = True
        self.notifier.stopping("shutting down")

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
        await self._parts.stop_all()
        await self._save_status()
        await self._close_history()
        if self._limiter is not None:
            emit_summaries(self._limiter, log, final=True)
        self.notifier.close()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._parts.start(name, self._guard(work, name))

    async def _guard(self, work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except Exception:  # a bug here must not take the gateway down; say so loudly
            log.exception("operations_task_failed", task=name)

    async def _open_history(self) -> None:
        try:
            self.history = await HistoryRing.open(self.observed.data_dir / HISTORY_FILE)
        except (OSError, sqlite3.Error, GatewayError) as exc:  # the console goes without charts
            log.error("history_unavailable", error=str(exc))
            return
        self._sampler = HistorySampler(
            self.history, self.observed, interval_s=self.section.history_interval_s, clock=self.now
        )
        self._spawn(self._sampler.run(), "history")

    async def _close_history(self) -> None:
        if self.history is None or self._sampler is None:
            return
        await self._sampler.sample_once()  # what came since the last sample is kept too
        await self.history.close()

    # --- readiness ----------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Check]]:
        gw = self.observed
        checks: dict[str, Check] = {
            "outbox": self.outbox.check(),
            "store": self.store.check(),
        }
        if gw.tcp is not None:
            checks["tcp"] = Check(
                gw.tcp.listening, {} if gw.tcp.listening else {"error": "not listening"}
            )
        if gw.mqtt is not None:
            connected = gw.mqtt.connected.is_set()
            checks["mqtt"] = Check(
                connected, {} if connected else {"error": "broker not connected"}
            )
        if self.modem is not None:
            m = self.modem
            checks["sms"] = Check(
                m.ready and m.registered is not False,
                {"modem_ready": m.ready, "registered": m.registered, "signal_dbm": m.signal_dbm},
            )
        checks["running"] = Check(
            not self._stopping, {"error": "shutting down"} if self._stopping else {}
        )
        return all(c.ok for c in checks.values()), checks

    def ready_now(self) -> bool:
        return self.readiness()[0]

    async def refresh_backlog(self) -> None:
        with contextlib.suppress(sqlite3.Error, ValueError):
            self.backlog = await self.observed.outbox.backlog()

    def loop_lag_s(self) -> float:
        return self.watchdog.last_lag_s if self.watchdog is not None else self.lag.last_lag_s

    def log_suppressed(self) -> int:
        return self._limiter.suppressed_total if self._limiter is not None else 0

    # --- housekeeping -------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Silent terminals, readiness changes, log summaries; the status file now and then."""
        saved = time.monotonic()
        while True:
            await asyncio.sleep(max(0.05, min(HOUSEKEEPING_S, self.section.silent_after_s / 4)))
            self.fleet.sweep(self.now())
            self._log_readiness()
            if self._limiter is not None:
                emit_summaries(self._limiter, log)
            if time.monotonic() - saved >= self.section.status_interval_s:
                saved = time.monotonic()
                await self._save_status()

    def _log_readiness(self) -> None:
        ready, checks = self.readiness()
        if ready == self._was_ready:
            return
        if not ready and not self._stopping:
            failing = {n: c.detail.get("error") for n, c in checks.items() if not c.ok}
            log.warning("gateway_unready", failing=failing)
        elif ready and self._was_ready is not None:
            log.info("gateway_ready")
        self._was_ready = ready

    async def _save_status(self) -> None:
        rows = self.fleet.snapshot()
        try:
            await asyncio.to_thread(save_status, self.status_path, rows, self.now())
        except (OSError, sqlite3.Error) as exc:
            log.error("status_save_failed", path=str(self.status_path), error=str(exc))

    async def _restore_status(self) -> None:
        try:
            rows, _ = await asyncio.to_thread(load_status, self.status_path)
        except (OSError, sqlite3.Error) as exc:
            log.error("status_save_failed", path=str(self.status_path), error=str(exc))
            return
        self.fleet.restore(rows)
