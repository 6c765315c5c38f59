"""The operations commands: ``smiley-gateway check`` and ``smiley-gateway status``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.intake.fleet_status import STATUS_FILE, FleetStatus, Thresholds, load_status
from gateway.registry.check import check
from gateway.registry.config import Config, HealthSection, load_config, parse_listen
from gateway.registry.terminals import load_registry

LIVE_TIMEOUT_S = 2.0


def add_commands(commands: Any) -> None:
    """Register ``check`` and ``status`` on the top-level subparsers."""
    check_cmd = commands.add_parser(
        "check", help="validate the configuration, the registry and what they refer to"
    )
    check_cmd.add_argument("--config", type=Path, help="configuration TOML")
    check_cmd.add_argument(
        "--offline", action="store_true", help="skip reaching the store, broker and modem"
    )
    check_cmd.set_defaults(func=_check)

    status = commands.add_parser(
        "status", help="each terminal's last contact, battery, signal, queue and clock"
    )
    status.add_argument("--config", type=Path, help="configuration TOML")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--flagged", action="store_true", help="only terminals with a flag")
    status.add_argument(
        "--saved", action="store_true", help=f"read {STATUS_FILE}, not the running gateway"
    )
    status.set_defaults(func=_status)


def _check(args: argparse.Namespace) -> int:
    result = asyncio.run(check(args.config, reach=not args.offline))
    for problem in result.problems:
        print(problem)
    if result.problems:
        count = len(result.problems)
        print(f"{count} problem{'s' if count > 1 else ''} found", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"ok: {note}")
    print(f"ok: {args.config or 'the default configuration'} is valid")
    return 0


def _status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    section = config.health or HealthSection()
    limits = Thresholds(section.silent_after_s, section.low_battery_pct, section.clock_drift_s)
    body, source = None, ""
    if config.health is not None and not args.saved:
        body = _live_status(config.health.listen)
        source = f"live from the gateway at {config.health.listen}"
    if body is None:
        body, source = _saved_status(config, limits)
    if args.flagged:
        body["terminals"] = [t for t in body["terminals"] if t["flags"]]
    if args.json:
        json.dump({"source": source, **body}, sys.stdout, indent=2)
        print()
        return 0
    names = _names(config)
    print(f"source: {source}")
    print(_table(body, names))
    flagged = sum(1 for t in body["terminals"] if t["flags"])
    print(f"{len(body['terminals'])} terminals, {flagged} flagged")
    return 0


def _live_status(listen: str) -> dict[str, Any] | None:
    host, port = parse_listen("health.listen", listen)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard: ask over loopback
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    try:
        with urllib.request.urlopen(
            f"http://{host}:{port}/status", timeout=LIVE_TIMEOUT_S
        ) as response:
            body: dict[str, Any] = json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return body


def _saved_status(config: Config, limits: Thresholds) -> tuple[dict[str, Any], str]:
    path = config.data_dir / STATUS_FILE
    rows, saved_at = load_status(path)
    fleet = FleetStatus(limits)
    fleet.restore(rows)
    now = time.time()
    if saved_at is None:
        source = f"{path} (no status saved yet)"
    else:
        source = f"{path}, saved {_ago(now - saved_at)} ago (the gateway is not answering)"
    return fleet.to_json(now), source


def _names(config: Config) -> dict[int, str]:
    if config.gateway.registry is None:
        return {}
    try:
        registry = load_registry(config.path(config.gateway.registry))
    except GatewayError:
        return {}
    return {t.id: t.name or "" for t in registry.terminals.values()}


_COLUMNS = ("TERMINAL", "NAME", "LAST CONTACT (UTC)", "AGO", "VIA", "BATTERY", "SIGNAL",
            "QUEUED", "CLOCK", "FLAGS")  # fmt: skip


def _table(body: dict[str, Any], names: dict[int, str]) -> str:
    rows = [_COLUMNS]
    for t in body["terminals"]:
        last = t["last_contact"]
        rows.append(
            (
                str(t["terminal_id"]),
                names.get(t["terminal_id"], "")[:24],
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last)) if last else "never",
                _ago(t["silent_for_s"]) if t["silent_for_s"] is not None else "-",
                t["transport"] or "-",
                _battery(t["battery_pct"]),
                f"{t['signal_dbm']} dBm" if t["signal_dbm"] is not None else "-",
                str(t["queued"]) if t["queued"] is not None else "-",
                _clock(t),
                ",".join(t["flags"]) or "ok",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _battery(pct: int | None) -> str:
    if pct is None:
        return "-"
    return "mains" if pct == 255 else f"{pct}%"


def _clock(t: dict[str, Any]) -> str:
    if t["clock_unsynced"]:
        return "unsynced"
    offset = t["clock_offset_s"]
    return "-" if offset is None else f"{offset:+d} s"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
