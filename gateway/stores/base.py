"""The interface between the forwarder, the exporter and a central store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.registry import Registry
from gateway.rows import PressRow, RejectRow
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

    @property
    def local_time(self) -> str:
        """Wall-clock time at the experience point, ISO 8601 with its UTC offset."""
        return format_local(self.occurred_at, self.utc_offset_s)


@dataclass(frozen=True, slots=True)
class StoredReject:
    uid: str
    row: RejectRow


@dataclass(frozen=True, slots=True)
class ImportSummary:
    added: int
    changed: int
    unchanged: int


class CentralStore(Protocol):
    """Idempotent on (terminal_id, seq) and on each reject's uid, so retries change nothing."""

    async def write(self, presses: Sequence[PressRow], rejects: Sequence[StoredReject]) -> None:
        """Commit a batch; return only after the commit, raise StoreError if it failed."""

    async def import_registry(self, registry: Registry) -> ImportSummary:
        """Insert or update every registry entry; running it twice changes nothing."""

    def presses(self, since: int | None, until: int | None) -> AsyncIterator[StoredPress]:
        """Every stored press with since <= occurred_at < until, oldest first, streamed."""

    def rejected(self, since: int | None, until: int | None) -> AsyncIterator[StoredReject]:
        """The quarantine, by time received, streamed."""

    async def close(self) -> None: ...
