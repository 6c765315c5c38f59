"""The periodic stats line operations staff watch."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from gateway.app import Gateway

log = structlog.get_logger("gateway.stats")


class StatsReporter:
    def __init__(self, gateway: Gateway, *, interval_s: float) -> None:
        self._gateway = gateway
        self._interval_s = interval_s

    async def run(self) -> None:
        last_presses = self._gateway.outbox.committed_presses
        last_time = time.monotonic()
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            counters = self._gateway.ingest.counters
            committed = self._gateway.outbox.committed_presses
            backlog = await self._gateway.outbox.backlog()
            oldest = backlog.oldest_received_at_ms
            log.info(
                "stats",
                connections=self._gateway.tcp.connections if self._gateway.tcp else 0,
                presses=committed,
                presses_per_s=round((committed - last_presses) / (now - last_time), 1),
                outbox_depth=backlog.presses + backlog.rejects + backlog.hours,
                forward_lag_s=round(time.time() - oldest / 1000, 1) if oldest else 0.0,
                forwarded=self._gateway.forwarder.forwarded,
                quarantined=counters.rejected_records + counters.refused_frames,
                busy=self._gateway.outbox.busy_errors,
                outbox_commits=self._gateway.outbox.commits,
                **self._modem_fields(),
            )
            last_presses, last_time = committed, now

    def _modem_fields(self) -> dict[str, object]:
        modem, sms = self._gateway.modem, self._gateway.sms
        if modem is None or sms is None:
            return {}
        m = modem.status
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
            "sms_batches": sms.counters.batches,
            "sms_quarantined": sum(sms.counters.quarantined.values()),
        }
