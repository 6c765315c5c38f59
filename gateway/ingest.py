"""The sink every transport hands decoded frames to.

It turns a PRESSES frame into rows placed in time, splits off records the spec
says must not be counted, and commits both to the outbox in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.fleet_status import FleetStatus
from gateway.outbox import Outbox
from gateway.registry import Registry
from gateway.rows import PressRow, RejectRow
from gateway.timekeeping import UtcOffsets, clock_offset
from protocols.constants import NakCode
from protocols.errors import DecodeError
from protocols.frames import Heartbeat, Hello, Presses


@dataclass(frozen=True, slots=True)
class Origin:
    """Where and when a frame arrived."""

    transport: str
    peer: str
    received_at: float

    @property
    def received_at_ms(self) -> int:
        return int(self.received_at * 1000)


@dataclass(slots=True)
class IngestCounters:
    presses_received: int = 0
    rejected_records: int = 0
    refused_frames: int = 0
    heartbeats: int = 0
    by_transport: dict[str, int] = field(default_factory=dict)
    naks: dict[str, int] = field(default_factory=dict)  # by NAK code name
    quarantined: dict[str, int] = field(default_factory=dict)  # by reason


class Ingest:
    """Commits what terminals send; raises OutboxBusy when it cannot."""

    def __init__(self, registry: Registry, outbox: Outbox) -> None:
        self._registry = registry
        self._outbox = outbox
        self.counters = IngestCounters()
        self.last_heartbeat: dict[int, tuple[Heartbeat, Origin]] = {}
        self._offsets: dict[int, UtcOffsets] = {}
        self.fleet = FleetStatus()  # what each terminal last reported (gateway/fleet_status.py)

    def next_seq(self, terminal_id: int) -> int:
        return self._outbox.next_seq(terminal_id)

    async def presses(self, frame: Presses, origin: Origin) -> None:
        """Return once every record of ``frame`` is durably committed (or was before)."""
        received = int(origin.received_at)
        offset = clock_offset(frame, received)
        utc_offset = self._offsets.get(frame.terminal_id)
        if utc_offset is None:
            utc_offset = UtcOffsets(self._registry.zone_for(frame.terminal_id))
            self._offsets[frame.terminal_id] = utc_offset
        valid = [r for r in frame.records if r.problem is None]
        shift = offset or 0
        corrected = offset is not None
        terminal_id, transport, received_ms = (
            frame.terminal_id,
            origin.transport,
            origin.received_at_ms,
        )
        counted = [
            PressRow(
                terminal_id,
                seq,
                ts + shift,
                utc_offset(ts + shift),
                button,
                followup,
                corrected,
                transport,
                received_ms,
            )
            for seq, ts, button, followup in valid
        ]
        rejected = [
            RejectRow(
                received_ms,
                transport,
                origin.peer,
                terminal_id,
                record.seq,
                "RECORD_INVALID",
                problem,
                record.to_bytes(),
            )
            for record in frame.records
            if (problem := record.problem) is not None
        ]
        await self._outbox.commit(counted, rejected)
        self.counters.presses_received += len(counted)
        self.counters.rejected_records += len(rejected)
        by = self.counters.by_transport
        by[origin.transport] = by.get(origin.transport, 0) + len(counted)
        if rejected:
            _count(self.counters.quarantined, "RECORD_INVALID", len(rejected))
        self.fleet.presses(frame, origin.transport, origin.peer, origin.received_at)

    async def refused(
        self, error: DecodeError, origin: Origin, *, reason: str | None = None
    ) -> None:
        """Keep a frame the gateway refused, with its raw bytes and the reason."""
        await self._outbox.commit(
            (),
            (
                RejectRow(
                    origin.received_at_ms,
                    origin.transport,
                    origin.peer,
                    error.terminal_id,
                    None,
                    reason or error.name,
                    error.reason,
                    error.raw,
                ),
            ),
        )
        self.counters.refused_frames += 1
        _count(self.counters.quarantined, reason or error.name)

    def heartbeat(self, frame: Heartbeat, origin: Origin) -> None:
        self.counters.heartbeats += 1
        self.last_heartbeat[frame.terminal_id] = (frame, origin)
        self.fleet.heartbeat(frame, origin.transport, origin.peer, origin.received_at)

    def hello(self, frame: Hello, origin: Origin) -> None:
        self.fleet.hello(frame, origin.transport, origin.peer, origin.received_at)

    def nak_sent(self, code: NakCode) -> None:
        _count(self.counters.naks, code.name)


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n
