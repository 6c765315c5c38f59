"""The operations console: one self-contained page at ``/`` and its data at ``/console/data``.

Read-only, on the health port. The page (``console.html``, package data) has
no external resource of any kind (its Content-Security-Policy forbids them)
and fetches ``/console/data`` every :data:`REFRESH_S` seconds: the fleet (every
registered terminal, heard from or not, flagged ones first), the charts from
the history ring (:mod:`gateway.ops.history`) and the modem. When the gateway
stops answering the page says its data is stale.

With ``health.console_user`` and ``health.console_password_file`` set, both
need HTTP Basic credentials (the health port may then be bound beyond
localhost); ``/healthz``, ``/readyz``, ``/metrics`` and ``/status`` stay as they are.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.intake.fleet_status import FleetStatus, TerminalStatus
from gateway.ops.history import HOUR, MINUTE, HistoryRing
from gateway.ops.views import ModemView
from gateway.registry.config import HealthSection
from gateway.registry.terminals import Registry

REFRESH_S = 10
REALM = "smiley-gateway console"
# Nothing from elsewhere: the page's own inline script and style, and its data.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart of the page: which series of the ring, at which step, how far back."""

    title: str
    prefix: str
    step: int
    span_s: int
    unit: str
    only: str | None = None
    """One series of the prefix (the outbox's depth and lag are two charts)."""


CHARTS = {
    "presses": Chart("Presses per hour, by transport", "presses:", HOUR, 48 * HOUR, "presses"),
    "refusals": Chart("Refusals per hour, by reason", "refusals:", HOUR, 48 * HOUR, "refusals"),
    "outbox": Chart("Outbox depth", "outbox:", MINUTE, 6 * HOUR, "rows", only="depth"),
    "lag": Chart("Forward lag", "outbox:", MINUTE, 6 * HOUR, "s", only="lag_s"),
    "signal": Chart("Modem signal", "modem:", HOUR, 7 * 24 * HOUR, "dBm", only="signal_dbm"),
}

FLAG_WORDS = {
    "never_seen": "never seen",
    "silent": "silent",
    "low_battery": "low battery",
    "clock_drift": "drifting clock",
    "clock_unsynced": "clock lost",
}


class ConsoleSource:
    """What the console reads: the fleet, the registry, the modem and the history ring."""

    def __init__(
        self,
        *,
        fleet: FleetStatus,
        registry: Registry,
        modem: ModemView | None,
        history: Callable[[], HistoryRing | None],
        now: Callable[[], float],
    ) -> None:
        self.fleet = fleet
        self.registry = registry
        self.modem = modem
        self._history = history
        self.now = now

    async def data(self) -> dict[str, Any]:
        now = self.now()
        return {
            "now": now,
            "refresh_s": REFRESH_S,
            "thresholds": {
                "silent_after_s": self.fleet.limits.silent_after_s,
                "low_battery_pct": self.fleet.limits.low_battery_pct,
                "clock_drift_s": self.fleet.limits.clock_drift_s,
            },
            "flag_words": FLAG_WORDS,
            "terminals": self.terminals(now),
            "charts": await self.charts(now),
            "modem": modem_panel(self.modem),
        }

    def terminals(self, now: float) -> list[dict[str, Any]]:
        rows = [self._row(status, now) for status in self.fleet.snapshot()]
        rows.sort(key=lambda r: (not r["flags"], r["id"]))  # flagged first
        return rows

    def _row(self, status: TerminalStatus, now: float) -> dict[str, Any]:
        terminal = self.registry.terminals.get(status.terminal_id)
        location = self.registry.locations.get(terminal.location) if terminal else None
        seen = status.last_contact
        flags = status.flags(now, self.fleet.limits) if seen is not None else ["never_seen"]
        return {
            "id": status.terminal_id,
            "name": terminal.name if terminal else None,
            "location": location.name if location else None,
            "transport": status.transport or ("sms" if terminal and terminal.phone else None),
            "last_contact": seen,
            "ago_s": None if seen is None else max(0.0, round(now - seen, 1)),
            "battery_pct": status.battery_pct,
            "mains_powered": status.battery_pct == 255,
            "signal_dbm": status.signal_dbm,
            "clock_offset_s": status.clock_offset_s,
            "queued": status.queued,
            "presses": status.presses,
            "flags": flags,
        }

    async def charts(self, now: float) -> dict[str, Any]:
        ring = self._history()
        found: dict[str, Any] = {}
        for name, chart in CHARTS.items():
            since = now - chart.span_s
            series: dict[str, list[list[float]]] = {}
            if ring is not None:
                points = await ring.points(chart.prefix, chart.step, since)
                for label, line in sorted(points.items()):
                    if chart.only is None or label == chart.only:
                        series[label] = [[p.at, p.value] for p in line]
            found[name] = {
                "title": chart.title,
                "unit": chart.unit,
                "step_s": chart.step,
                "from": since,
                "to": now,
                "series": series,
            }
        return found


def modem_panel(modem: ModemView | None) -> dict[str, Any] | None:
    if modem is None:
        return None
    return {
        "ready": modem.ready,
        "registered": modem.registered,
        "signal_dbm": modem.signal_dbm,
        "sim": modem.sim,
        "storage_used": modem.storage_used,
        "storage_total": modem.storage_total,
    }


# --- HTTP ---------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def console_routes(source: ConsoleSource, section: HealthSection) -> list[Route]:
    page = resources.files("gateway.ops").joinpath("console.html").read_text(encoding="utf-8")
    guard = basic_auth(section)

    async def index(_: Request) -> Response:
        return HTMLResponse(page, headers={"content-security-policy": CSP,
                                           "cache-control": "no-store"})  # fmt: skip

    async def data(_: Request) -> Response:
        return JSONResponse(await source.data(), headers={"cache-control": "no-store"})

    return [Route("/", guard(index)), Route("/console/data", guard(data))]


def basic_auth(section: HealthSection) -> Callable[[Handler], Handler]:
    """A guard asking for ``console_user`` and the password in its file; none if unset."""
    user, secret_file = section.console_user, section.console_password_file
    if user is None or secret_file is None:
        return lambda handler: handler
    password = secret_file.read_text(encoding="utf-8").rstrip("\r\n")
    expected = f"{user}:{password}".encode()

    def guard(handler: Handler) -> Handler:
        async def checked(request: Request) -> Response:
            if not _credentials_match(request.headers.get("authorization", ""), expected):
                return Response(
                    "credentials needed\n",
                    status_code=401,
                    headers={"www-authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                    media_type="text/plain",
                )
            return await handler(request)

        return checked

    return guard


def _credentials_match(header: str, expected: bytes) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)  # in constant time: no guessing by timing
