"""The outbox's SMS bookkeeping: what one SMS transaction may read and write.

The SMS transport decides what a message is (a part, a batch, a repeat); this
ledger is the only place that knows the tables those decisions touch, so no
caller ever holds the outbox's connection. A ledger lives for one write
transaction of :meth:`gateway.intake.outbox.Outbox.sms_transaction`: everything
done through it commits together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from gateway.rows import HourCountRow, RejectRow

_INSERT_REJECT = (
    "INSERT OR IGNORE INTO rejected (received_at_ms, transport, peer, terminal_id, seq, reason,"
    " detail, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_HOUR = (
    "INSERT INTO hour_count (terminal_id, hour, utc_offset_s, button, count, batch_seq,"
    " transport, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_PART_WHERE = "sender = ? AND reference = ? AND reference_bits = ? AND total = ?"


@dataclass(frozen=True, slots=True)
class PartGroup:
    """The parts of one concatenated message: who sent it, its reference and size."""

    sender: str
    reference: int
    reference_bits: int
    total: int

    def where(self) -> tuple[str, int, int, int]:
        return (self.sender, self.reference, self.reference_bits, self.total)


@dataclass(frozen=True, slots=True)
class StaleGroup:
    """Parts that waited past the reassembly timeout, as they were received."""

    group: PartGroup
    present: str
    """The part numbers that did arrive, comma-separated."""
    first_received_ms: int
    raw: bytes


class SmsLedger:
    """Typed reads and writes of the SMS tables, inside one outbox transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    # --- messages already taken ---------------------------------------------------

    async def seen(self, digest: bytes) -> bool:
        async with self._db.execute("SELECT 1 FROM sms_seen WHERE digest = ?", (digest,)) as cur:
            return await cur.fetchone() is not None

    async def remember(self, digest: bytes, received_ms: int) -> None:
        await self._db.execute("INSERT INTO sms_seen VALUES (?, ?)", (digest, received_ms))

    async def forget_seen_before(self, received_ms: int) -> None:
        await self._db.execute("DELETE FROM sms_seen WHERE received_at_ms < ?", (received_ms,))

    # --- parts waiting for the rest of their message -----------------------------

    async def held_parts(self, group: PartGroup) -> dict[int, bytes]:
        async with self._db.execute(
            f"SELECT part, pdu FROM sms_part WHERE {_PART_WHERE} ORDER BY part",  # noqa: S608
            group.where(),
        ) as cursor:
            return {part: bytes(pdu) for part, pdu in await cursor.fetchall()}

    async def hold_part(self, group: PartGroup, index: int, raw: bytes, received_ms: int) -> None:
        await self._db.execute(
            "INSERT INTO sms_part VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*group.where(), index, raw, received_ms),
        )

    async def release_parts(self, group: PartGroup) -> None:
        await self._db.execute(f"DELETE FROM sms_part WHERE {_PART_WHERE}", group.where())  # noqa: S608

    async def stale_groups(self, received_before_ms: int) -> list[StaleGroup]:
        """Groups whose first part arrived before ``received_before_ms``, with their PDUs."""
        async with self._db.execute(
            "SELECT sender, reference, reference_bits, total, group_concat(part),"
            " min(received_at_ms) FROM sms_part GROUP BY 1, 2, 3, 4 HAVING min(received_at_ms) < ?",
            (received_before_ms,),
        ) as cursor:
            rows = list(await cursor.fetchall())
        stale = []
        for sender, reference, bits, total, present, first_ms in rows:
            group = PartGroup(sender, reference, bits, total)
            held = await self.held_parts(group)
            stale.append(StaleGroup(group, present, first_ms, b"".join(held.values())))
        return stale

    # --- HOURLY batches -----------------------------------------------------------

    async def batch_identity(self, terminal_id: int, batch_seq: int) -> bytes | None:
        """The digest of the batch taken before with this batch_seq, if any."""
        async with self._db.execute(
            "SELECT digest FROM sms_batch WHERE terminal_id = ? AND batch_seq = ?",
            (terminal_id, batch_seq),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else bytes(row[0])

    async def record_batch(
        self, terminal_id: int, batch_seq: int, identity: bytes, received_ms: int
    ) -> None:
        await self._db.execute(
            "INSERT INTO sms_batch VALUES (?, ?, ?, ?)",
            (terminal_id, batch_seq, identity, received_ms),
        )

    async def add_hours(self, hours: Sequence[HourCountRow]) -> None:
        """Hour counts, forwarded to the central store like presses."""
        await self._db.executemany(_INSERT_HOUR, hours)

    async def quarantine(self, rejects: Sequence[RejectRow]) -> None:
        await insert_rejects(self._db, rejects)


async def insert_rejects(db: aiosqlite.Connection, rejects: Sequence[RejectRow]) -> None:
    """Quarantine rows, inside a transaction the caller (the outbox) holds."""
    await db.executemany(
        _INSERT_REJECT,
        [
            (r.received_at_ms, r.transport, r.peer, r.terminal_id, r.seq, r.reason, r.detail,
             r.raw)
            for r in rejects
        ],
    )  # fmt: skip
