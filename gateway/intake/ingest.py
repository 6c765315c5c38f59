"""The sink every transport hands decoded frames to.

It turns a PRESSES frame into rows placed in time, splits off records the spec
says must not be counted, and commits both to the outbox in one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from gateway.intake.fleet_status import FleetStatus
from gateway.intake.outbox import Outbox
from gateway.intake.sms_ledger import SmsLedger
from gateway.intake.store_seq import StoreSeq, welcome_seq
from gateway.intake.web_ledger import WebLedger, WebTaken
from gateway.registry.terminals import Registry
from gateway.rows import HourCountRow, PressRow, RejectRow
from gateway.timekeeping import UtcOffsets, clock_offset
from protocols.constants import NakCode
from protocols.errors import PeerError
from protocols.frames import Heartbeat, Hello, Hourly, Presses, PressRecord, all_countable


@dataclass(frozen=True, slots=True)
class Origin:
    """Where and when a frame arrived."""

    transport: str
    peer: str
    received_at: float

    @property
    def received_at_ms(self) -> int:
        return int(self.received_at * 1000)


@dataclass(frozen=True, slots=True)
class Placed:
    """A PRESSES frame turned into rows (see :meth:`Ingest.place`), not yet committed."""

    frame: Presses
    origin: Origin
    counted: list[PressRow]
    rejected: list[RejectRow]


@dataclass(frozen=True, slots=True)
class SmsTaken:
    """What one SMS transaction did (see :meth:`Ingest.sms`), once committed."""

    outcome: str
    """In words, for the log line and tests."""
    new_message: bool = True
    duplicate: bool = False
    part_waiting: bool = False
    batch: Hourly | None = None
    """The HOURLY batch whose hours were committed, if any."""
    origin: Origin | None = None
    """Where the batch came from (its sender)."""
    quarantined: tuple[RejectRow, ...] = ()


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

    def __init__(
        self, registry: Registry, outbox: Outbox, store_seq: StoreSeq | None = None
    ) -> None:
        self._registry = registry
        self._outbox = outbox
        self._store_seq = store_seq
        self.counters = IngestCounters()
        self.last_heartbeat: dict[int, tuple[Heartbeat, Origin]] = {}
        self._offsets: dict[int, UtcOffsets] = {}
        self.fleet = (
            FleetStatus()
        )  # what each terminal last reported (gateway/intake/fleet_status.py)

    def next_seq(self, terminal_id: int) -> int:
        return self._outbox.next_seq(terminal_id)

    async def welcome_seq(self, terminal_id: int) -> int:
        """WELCOME's next_seq: past what the outbox or the central store holds."""
        outbox_next = self._outbox.next_seq(terminal_id)
        return await welcome_seq(outbox_next, self._store_seq, terminal_id)

    async def presses(self, frame: Presses, origin: Origin) -> None:
        """Return once every record of ``frame`` is durably committed (or was before)."""
        await self.commit((self.place(frame, origin),))

    async def refused(self, error: PeerError, origin: Origin, *, reason: str | None = None) -> None:
        """Keep a frame the gateway refused, with its raw bytes and the reason."""
        await self.commit((), (refusal_row(error, origin, reason),))

    async def sms(self, work: Callable[[SmsLedger], Awaitable[SmsTaken]]) -> SmsTaken:
        """Run one SMS message's ``work`` in an outbox transaction, then count what it did.

        The SMS transport decides in ``work`` (a part, a repeat, a batch) and
        writes through the ledger; nothing is counted unless it committed.
        """
        taken = await self._outbox.sms_transaction(work)
        for row in taken.quarantined:
            self.counters.refused_frames += 1
            _count(self.counters.quarantined, row.reason)
        batch, origin = taken.batch, taken.origin
        if batch is not None and origin is not None:
            self.fleet.hourly(batch, origin.transport, origin.peer, origin.received_at)
        return taken

    async def web(self, work: Callable[[WebLedger], Awaitable[WebTaken]]) -> WebTaken:
        """Run one web smiley request's ``work`` in an outbox transaction, then count it."""
        taken = await self._outbox.web_transaction(work)
        self.counters.presses_received += taken.new
        by = self.counters.by_transport
        by["web"] = by.get("web", 0) + taken.new
        return taken

    async def web_upkeep(self, work: Callable[[WebLedger], Awaitable[int]]) -> int:
        """Run web smiley housekeeping (nothing to count) in an outbox transaction."""
        return await self._outbox.web_transaction(work)

    def place_hours(self, frame: Hourly, origin: Origin) -> list[HourCountRow]:
        """The hour counts of an HOURLY batch, each hour with its UTC offset."""
        offsets = self._utc_offsets(frame.terminal_id)
        received_ms = origin.received_at_ms
        rows = []
        for i, counts in enumerate(frame.counts):
            hour = frame.hour_start + 3600 * i
            offset = offsets(hour)
            rows += [
                HourCountRow(
                    frame.terminal_id, hour, offset, button, count, frame.batch_seq,
                    origin.transport, received_ms,
                )
                for button, count in enumerate(counts, start=1)
            ]  # fmt: skip
        return rows

    def _utc_offsets(self, terminal_id: int) -> UtcOffsets:
        utc_offset = self._offsets.get(terminal_id)
        if utc_offset is None:
            utc_offset = UtcOffsets(self._registry.zone_for(terminal_id))
            self._offsets[terminal_id] = utc_offset
        return utc_offset

    def place(self, frame: Presses, origin: Origin) -> Placed:
        """The rows of ``frame``, placed in time; nothing is committed or counted yet."""
        received = int(origin.received_at)
        offset = clock_offset(frame, received)
        utc_offset = self._utc_offsets(frame.terminal_id)
        shift = offset or 0
        corrected = offset is not None
        terminal_id, transport, received_ms = (
            frame.terminal_id,
            origin.transport,
            origin.received_at_ms,
        )
        valid, rejected = _split(frame, origin)
        # tuple.__new__ builds the NamedTuple without its Python-level __new__:
        # this runs once per press.
        new = tuple.__new__
        counted = [
            new(
                PressRow,
                (
                    terminal_id,
                    seq,
                    ts + shift,
                    utc_offset(ts + shift),
                    button,
                    followup,
                    corrected,
                    transport,
                    received_ms,
                    "",
                ),
            )
            for seq, ts, button, followup in valid
        ]
        return Placed(frame, origin, counted, rejected)

    async def commit(self, placed: Sequence[Placed], refused: Sequence[RejectRow] = ()) -> None:
        """Commit frames and refused frames in one transaction, then count them.

        Return once all of it is durably committed; raise OutboxBusy (nothing
        counted) when it is not.
        """
        if len(placed) == 1 and not refused:
            counted, rejected = placed[0].counted, placed[0].rejected
        else:
            counted = [row for p in placed for row in p.counted]
            rejected = [row for p in placed for row in p.rejected]
            rejected += refused
        await self._outbox.commit(counted, rejected)
        for p in placed:
            self._count_presses(p)
        for row in refused:
            self.counters.refused_frames += 1
            _count(self.counters.quarantined, row.reason)

    def _count_presses(self, placed: Placed) -> None:
        origin = placed.origin
        self.counters.presses_received += len(placed.counted)
        self.counters.rejected_records += len(placed.rejected)
        by = self.counters.by_transport
        by[origin.transport] = by.get(origin.transport, 0) + len(placed.counted)
        if placed.rejected:
            _count(self.counters.quarantined, "RECORD_INVALID", len(placed.rejected))
        self.fleet.presses(placed.frame, origin.transport, origin.peer, origin.received_at)

    def heartbeat(self, frame: Heartbeat, origin: Origin) -> None:
        self.counters.heartbeats += 1
        self.last_heartbeat[frame.terminal_id] = (frame, origin)
        self.fleet.heartbeat(frame, origin.transport, origin.peer, origin.received_at)

    def hello(self, frame: Hello, origin: Origin) -> None:
        self.fleet.hello(frame, origin.transport, origin.peer, origin.received_at)

    def nak_sent(self, code: NakCode) -> None:
        _count(self.counters.naks, code.name)


def _split(frame: Presses, origin: Origin) -> tuple[Sequence[PressRecord], list[RejectRow]]:
    """The records to count, and quarantine rows for those the spec says not to count."""
    records = frame.records
    # Such a record is rare: one test over the frame, and only a frame that has
    # one asks each record for its problem.
    if all_countable(records):
        return records, []
    rejected = [
        RejectRow(
            origin.received_at_ms,
            origin.transport,
            origin.peer,
            frame.terminal_id,
            record.seq,
            "RECORD_INVALID",
            problem,
            record.to_bytes(),
        )
        for record in records
        if (problem := record.problem) is not None
    ]
    return [r for r in records if r.problem is None], rejected


def refusal_row(error: PeerError, origin: Origin, reason: str | None = None) -> RejectRow:
    """The quarantine row of a refused frame: its raw bytes and why (``reason`` or its error)."""
    return RejectRow(
        origin.received_at_ms,
        origin.transport,
        origin.peer,
        error.terminal_id,
        None,
        reason or error.name,
        error.reason,
        error.raw,
    )


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n
