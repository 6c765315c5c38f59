"""Fleet status: what each terminal last told the gateway, and which ones need a visit.

Fed by the ingest sink from HELLO, HEARTBEAT and PRESSES frames of every
transport; kept in memory and saved periodically to ``status.db`` in the data
directory (not the outbox: nothing here is a press, so a lost last minute
costs nothing and ``synchronous=NORMAL`` is enough). ``smiley-gateway status``
and the health port's ``/status`` show it.

A terminal is flagged

- ``silent`` when nothing came from it for ``silent_after_s`` (logged once as
  ``terminal_silent``, and ``terminal_returned`` when it speaks again),
- ``low_battery`` when its last HEARTBEAT said ``low_battery_pct`` or less
  (255, mains powered, never is),
- ``clock_drift`` when its clock is off the gateway's by more than
  ``clock_drift_s``, and ``clock_unsynced`` when it says it lost its clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import SchemaError
from gateway.privacy import mask_number
from gateway.sqlitedb import migrate_sync
from protocols.constants import MAINS_POWERED
from protocols.frames import Heartbeat, Hello, Hourly, Presses

log = structlog.get_logger("gateway.fleet_status")

STATUS_FILE = "status.db"


@dataclass(frozen=True, slots=True)
class Thresholds:
    silent_after_s: float = 900.0
    low_battery_pct: int = 20
    clock_drift_s: float = 120.0


@dataclass(slots=True)
class TerminalStatus:
    """The latest of what one terminal reported; None where it never said."""

    terminal_id: int
    last_contact: float | None = None
    transport: str | None = None
    peer: str | None = None
    battery_pct: int | None = None
    signal_dbm: int | None = None
    queued: int | None = None
    clock_offset_s: int | None = None
    clock_unsynced: bool = False
    fw_version: int | None = None
    boot_count: int | None = None
    uptime_s: int | None = None
    presses: int = 0
    silent: bool = False

    def flags(self, now: float, limits: Thresholds) -> list[str]:
        """What an operator should look at, worst first; empty when all is well."""
        found = []
        if self.last_contact is not None and now - self.last_contact > limits.silent_after_s:
            found.append("silent")
        if (
            self.battery_pct is not None
            and self.battery_pct != MAINS_POWERED
            and self.battery_pct <= limits.low_battery_pct
        ):
            found.append("low_battery")
        if self.clock_unsynced:
            found.append("clock_unsynced")
        elif self.clock_offset_s is not None and abs(self.clock_offset_s) > limits.clock_drift_s:
            found.append("clock_drift")
        return found

    def to_json(self, now: float, limits: Thresholds) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mains_powered"] = self.battery_pct == MAINS_POWERED
        data["silent_for_s"] = (
            round(now - self.last_contact, 1) if self.last_contact is not None else None
        )
        data["flags"] = self.flags(now, limits)
        return data


class FleetStatus:
    """In-memory status of every terminal heard from (and of every registered one)."""

    def __init__(self, limits: Thresholds | None = None) -> None:
        self.limits = limits or Thresholds()
        self.terminals: dict[int, TerminalStatus] = {}

    def _touch(self, terminal_id: int, transport: str, peer: str, at: float) -> TerminalStatus:
        status = self.terminals.get(terminal_id)
        if status is None:
            status = self.terminals[terminal_id] = TerminalStatus(terminal_id)
        if status.silent:
            status.silent = False
            log.info(
                "terminal_returned",
                terminal_id=terminal_id,
                transport=transport,
                silent_for_s=round(at - (status.last_contact or at), 1),
            )
        status.last_contact = at if status.last_contact is None else max(status.last_contact, at)
        status.transport = transport
        status.peer = peer
        return status

    def hello(self, frame: Hello, transport: str, peer: str, at: float) -> None:
        status = self._touch(frame.terminal_id, transport, peer, at)
        status.fw_version = frame.fw_version
        status.boot_count = frame.boot_count
        status.queued = frame.queued
        status.clock_unsynced = frame.clock_unsynced
        status.clock_offset_s = None if frame.clock_unsynced else frame.clock - int(at)

    def heartbeat(self, frame: Heartbeat, transport: str, peer: str, at: float) -> None:
        status = self._touch(frame.terminal_id, transport, peer, at)
        status.battery_pct = frame.battery_pct
        status.signal_dbm = frame.signal_dbm if frame.signal_dbm != 0 else None  # 0: unknown
        status.queued = frame.queued
        status.uptime_s = frame.uptime_s
        status.clock_offset_s = frame.clock - int(at)

    def presses(self, frame: Presses, transport: str, peer: str, at: float) -> None:
        status = self._touch(frame.terminal_id, transport, peer, at)
        status.presses += len(frame.records)
        status.clock_unsynced = frame.clock_unsynced
        if not frame.clock_unsynced:
            status.clock_offset_s = frame.sent_at - int(at)

    def hourly(self, frame: Hourly, transport: str, peer: str, at: float) -> None:
        """An HOURLY batch (SMS): contact, and its presses; the sender's number is masked."""
        status = self._touch(frame.terminal_id, transport, mask_number(peer), at)
        status.presses += sum(sum(hour) for hour in frame.counts)

    def known(self, terminal_ids: Iterable[int]) -> None:
        """List registered terminals too, so one never heard from shows as such."""
        for terminal_id in terminal_ids:
            self.terminals.setdefault(terminal_id, TerminalStatus(terminal_id))

    def sweep(self, now: float) -> list[int]:
        """Flag terminals that went silent since the last sweep (logged once each)."""
        newly = []
        for status in self.terminals.values():
            if status.silent or status.last_contact is None:
                continue
            quiet = now - status.last_contact
            if quiet > self.limits.silent_after_s:
                status.silent = True
                newly.append(status.terminal_id)
                log.warning(
                    "terminal_silent",
                    terminal_id=status.terminal_id,
                    transport=status.transport,
                    silent_for_s=round(quiet, 1),
                    silent_after_s=self.limits.silent_after_s,
                )
        return newly

    def snapshot(self) -> list[TerminalStatus]:
        return [dataclasses.replace(s) for s in sorted(self.terminals.values(), key=_by_id)]

    def restore(self, rows: Iterable[TerminalStatus]) -> None:
        """Take back what a previous run saved; newer in-memory contacts win."""
        for row in rows:
            current = self.terminals.get(row.terminal_id)
            if current is None or (current.last_contact or 0) < (row.last_contact or 0):
                self.terminals[row.terminal_id] = row

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "now": now,
            "thresholds": dataclasses.asdict(self.limits),
            "terminals": [s.to_json(now, self.limits) for s in self.snapshot()],
        }


def _by_id(status: TerminalStatus) -> int:
    return status.terminal_id


# --- status.db ------------------------------------------------------------------------

_FIELDS = [f.name for f in dataclasses.fields(TerminalStatus)]
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terminal_status (
    terminal_id INTEGER PRIMARY KEY, {", ".join(f"{n} NUMERIC" for n in _FIELDS[1:])}
);
"""
_MIGRATIONS = (_SCHEMA,)
SCHEMA_VERSION = len(_MIGRATIONS)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # status, not presses: a lost last save is fine
    return db


def save_status(path: Path, rows: Iterable[TerminalStatus], saved_at: float) -> None:
    """Replace what ``path`` holds with ``rows`` in one transaction (blocking: run in a thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = _connect(path)
    try:
        try:
            migrate_sync(db, _MIGRATIONS, "status")
        except SchemaError as exc:  # as before: the caller logs a database error and goes on
            raise sqlite3.DatabaseError(f"{path}: {exc}") from exc
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM terminal_status")
        db.executemany(
            f"INSERT INTO terminal_status ({', '.join(_FIELDS)})"  # noqa: S608 - fixed names
            f" VALUES ({', '.join('?' * len(_FIELDS))})",
            [dataclasses.astuple(row) for row in rows],
        )
        db.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('saved_at', ?)", (str(saved_at),)
        )
        db.execute("COMMIT")
    finally:
        db.close()


def load_status(path: Path) -> tuple[list[TerminalStatus], float | None]:
    """What ``path`` holds and when it was saved; nothing if there is no file yet."""
    if not path.exists():
        return [], None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        try:
            rows = db.execute(
                f"SELECT {', '.join(_FIELDS)} FROM terminal_status ORDER BY terminal_id"  # noqa: S608
            ).fetchall()
            saved = db.execute("SELECT value FROM meta WHERE name = 'saved_at'").fetchone()
        except sqlite3.OperationalError:  # made but never saved into
            return [], None
    finally:
        db.close()
    return [_row(r) for r in rows], float(saved[0]) if saved else None


def _row(values: tuple[Any, ...]) -> TerminalStatus:
    data: Mapping[str, Any] = dict(zip(_FIELDS, values, strict=True))
    status = TerminalStatus(**data)
    status.clock_unsynced = bool(status.clock_unsynced)
    status.silent = bool(status.silent)
    with contextlib.suppress(TypeError, ValueError):
        status.terminal_id = int(status.terminal_id)
    return status
