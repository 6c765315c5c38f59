"""The interface between the forwarder, the exporter and a central store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import RegistryError, StoreError
from gateway.registry.terminals import Registry, parse_registry
from gateway.rows import HourCountRow, PressRow, RejectRow
from gateway.stores.schema import REGISTRY_COLUMNS
from gateway.timekeeping import format_local


@dataclass(frozen=True, slots=True)
class StoredPress:
    """One export row (issue #2 field list); ``count`` is 1 for a press."""

    terminal_id: int
    seq: int
    occurred_at: int
    utc_offset_s: int
    precision: str
    button: int
    followup: int
    count: int
    transport: str
    clock_corrected: bool
    received_at_ms: int
    misuse: bool = False
    """Within the survey's misuse interval after the terminal's last counted press."""
    ui: str = ""
    """How a web smiley's press came (qr, link, email, digital); empty for a terminal's."""

    @property
    def local_time(self) -> str:
        """Wall-clock time at the experience point, ISO 8601 with its UTC offset."""
        return format_local(self.occurred_at, self.utc_offset_s)


@dataclass(frozen=True, slots=True)
class StoredReject:
    uid: str
    row: RejectRow


def reject_values(reject: StoredReject) -> tuple[Any, ...]:
    """A quarantined item as the column values every store's rejected table takes."""
    r = reject.row
    return (
        reject.uid, r.received_at_ms, r.transport, r.peer, r.terminal_id, r.seq,
        r.reason, r.detail, r.raw,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ImportSummary:
    added: int
    changed: int
    unchanged: int


def registry_rows(registry: Registry) -> dict[str, list[tuple[Any, ...]]]:
    """Every registry entry as a row of REGISTRY_COLUMNS, table by table."""
    return {
        "company": [(c.id, c.name) for c in registry.companies.values()],
        "location": [
            (loc.id, loc.company, loc.name, loc.parent, loc.timezone)
            for loc in registry.locations.values()
        ],
        "survey": [
            (s.id, s.company, s.question, s.locale, s.scale, s.misuse_interval_s)
            for s in registry.surveys.values()
        ],
        "terminal": [
            (t.id, t.key, t.location, t.survey, t.name, t.phone)
            for t in registry.terminals.values()
        ],
    }


def registry_from_rows(rows: dict[str, list[Sequence[Any]]]) -> Registry:
    """Rebuild a Registry from the rows of REGISTRY_COLUMNS, checked like a registry file."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for table, columns in REGISTRY_COLUMNS.items():
        entries = []
        for row in rows.get(table, []):
            entry = {c: v for c, v in zip(columns, row, strict=True) if v is not None}
            if table == "terminal":
                entry["key"] = bytes(entry["key"]).hex()
            entries.append(entry)
        tables[table] = entries
    try:
        return parse_registry(tables)
    except RegistryError as exc:
        raise StoreError(f"the registry in the store is inconsistent: {exc}") from exc


class CentralStore(Protocol):
    """Idempotent on (terminal_id, seq) and on each reject's uid, so retries change nothing."""

    async def write(
        self,
        presses: Sequence[PressRow],
        rejects: Sequence[StoredReject],
        hours: Sequence[HourCountRow] = (),
    ) -> None:
        """Commit a batch; return only after the commit, raise StoreError if it failed.

        Presses are kept once per (terminal_id, seq), with their misuse flags
        kept current; an hour count replaces the stored one only from a higher
        batch_seq.
        """

    async def import_registry(self, registry: Registry) -> ImportSummary:
        """Insert or update every registry entry; running it twice changes nothing."""

    async def load_registry(self) -> Registry:
        """The registry kept in the store (for edge gateways without a registry file)."""

    def presses(self, since: int | None, until: int | None) -> AsyncIterator[StoredPress]:
        """Every stored press with since <= occurred_at < until, oldest first, streamed."""

    def rejected(self, since: int | None, until: int | None) -> AsyncIterator[StoredReject]:
        """The quarantine, by time received, streamed."""

    async def close(self) -> None: ...
