"""The periodic stats line operations staff watch."""

from __future__ import annotations

import asyncio
import time

import structlog

from gateway.ops.views import Observed

log = structlog.get_logger("gateway.stats")


class StatsReporter:
    def __init__(self, observed: Observed, *, interval_s: float) -> None:
        self._observed = observed
        self._interval_s = interval_s

    async def run(self) -> None:
        seen = self._observed
        last_presses = seen.outbox.committed_presses
        last_time = time.monotonic()
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            counters = seen.counters
            committed = seen.outbox.committed_presses
            backlog = await seen.outbox.backlog()
            oldest = backlog.oldest_received_at_ms
            log.info(
                "stats",
                connections=seen.tcp.connections if seen.tcp else 0,
                presses=committed,
                presses_per_s=round((committed - last_presses) / (now - last_time), 1),
                outbox_depth=backlog.presses + backlog.rejects + backlog.hours,
                forward_lag_s=round(time.time() - oldest / 1000, 1) if oldest else 0.0,
                forwarded=seen.forwarder.forwarded,
                quarantined=counters.rejected_records + counters.refused_frames,
                busy=seen.outbox.busy_errors,
                outbox_commits=seen.outbox.commits,
                **self._modem_fields(),
                **self._web_fields(),
            )
            last_presses, last_time = committed, now

    def _web_fields(self) -> dict[str, object]:
        web = self._observed.web
        if web is None:
            return {}
        return {
            "web_presses": web.presses,
            "web_resent": web.resent,
            "web_refused": sum(web.refused.values()),
            "web_rate_limited": web.rate_limited,
        }

    def _modem_fields(self) -> dict[str, object]:
        m, sms = self._observed.modem, self._observed.sms
        if m is None or sms is None:
            return {}
        free = (
            None
            if m.storage_total is None or m.storage_used is None
            else (m.storage_total - m.storage_used)
        )
        return {
            "modem_ready": m.ready,
            "modem_signal_dbm": m.signal_dbm,
            "modem_registered": m.registered,
            "modem_sim": m.sim,
            "modem_storage_used": m.storage_used,
            "modem_storage_free": free,
            "sms_batches": sms.batches,
            "sms_quarantined": sum(sms.quarantined.values()),
        }
