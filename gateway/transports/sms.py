"""The SMS sink: PDUs from the modem to hour counts, parts and quarantine, durably.

:meth:`SmsIntake.take` returns only once everything a message carried is
committed in the outbox (its hour counts, its part, or its quarantine row), so
the modem driver may then delete it. Every step of a message happens in one
outbox transaction, keyed by a digest of the PDU: a message read twice (a
repeated indication, routed and stored, or not deleted before a crash) is
taken once. Parts of a concatenated message wait in the outbox until the last
one arrives, or until ``reassembly_timeout`` sends what did arrive to
quarantine.

HOURLY rules (spec, HOURLY and section 4 SMS): the first batch received with a
batch_seq stands, and a different one with the same batch_seq is kept in
quarantine; hour counts go to the central store, which keeps the count of the
highest batch_seq for each hour.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiosqlite
import structlog

from gateway.intake.outbox import Outbox, insert_hours, insert_rejects
from gateway.registry.terminals import Registry
from gateway.rows import HourCountRow, RejectRow, iso_utc
from gateway.timekeeping import UtcOffsets
from protocols.errors import DecodeError, NotAFrame, SmsDecodeError, SmsPartsError
from protocols.frames import Hourly
from protocols.sms_frame import decode_hourly, part_key
from protocols.sms_pdu import SmsDeliver, StatusReport, decode_pdu

log = structlog.get_logger("gateway.sms")

TRANSPORT = "sms"
_SEEN_KEEP_MS = 30 * 86400 * 1000  # far longer than any network keeps resending a message


@dataclass(slots=True)
class SmsCounters:
    messages: int = 0
    duplicates: int = 0
    parts_waiting: int = 0
    batches: int = 0
    hours: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)


class SmsIntake:
    def __init__(
        self,
        registry: Registry,
        outbox: Outbox,
        *,
        reassembly_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._outbox = outbox
        self._timeout_ms = int(reassembly_timeout_s * 1000)
        self._clock = clock
        self._offsets: dict[int, UtcOffsets] = {}
        self.counters = SmsCounters()

    async def take(self, pdu_hex: str, source: str) -> str:
        """Commit what the PDU carries; return what became of it (for logs and tests).

        Raises OutboxBusy when the outbox cannot commit: the message stays on the modem.
        """
        received_ms = int(self._clock() * 1000)
        try:
            raw = bytes.fromhex(pdu_hex)
        except ValueError:
            raw = pdu_hex.encode("latin-1", "replace")
        outcome = await self._outbox.apply(lambda db: self._take_in(db, raw, received_ms, source))
        log.info("sms_taken", source=source, outcome=outcome)
        return outcome

    async def _take_in(
        self, db: aiosqlite.Connection, raw: bytes, received_ms: int, source: str
    ) -> str:
        digest = _digest(raw)
        async with db.execute("SELECT 1 FROM sms_seen WHERE digest = ?", (digest,)) as cursor:
            if await cursor.fetchone() is not None:
                self.counters.duplicates += 1
                return "duplicate"
        await db.execute("INSERT INTO sms_seen VALUES (?, ?)", (digest, received_ms))
        self.counters.messages += 1
        try:
            sms = decode_pdu(raw)
        except SmsDecodeError as exc:
            return await self._reject(db, received_ms, source, "SMS_BAD_PDU", exc.reason, raw)
        if isinstance(sms, StatusReport):
            detail = f"status {sms.status}"
            return await self._reject(
                db, received_ms, sms.recipient, "SMS_STATUS_REPORT", detail, raw
            )
        key = part_key(sms)
        if key is None or key.total == 1:
            return await self._evaluate(db, [sms], raw, received_ms)
        return await self._part(db, sms, raw, received_ms)

    async def _part(
        self, db: aiosqlite.Connection, sms: SmsDeliver, raw: bytes, received_ms: int
    ) -> str:
        key = part_key(sms)
        assert key is not None
        assert sms.concat is not None
        where = (key.sender, key.reference, key.reference_bits, key.total)
        async with db.execute(
            "SELECT part, pdu FROM sms_part WHERE sender = ? AND reference = ?"
            " AND reference_bits = ? AND total = ? ORDER BY part",
            where,
        ) as cursor:
            held = {part: bytes(pdu) for part, pdu in await cursor.fetchall()}
        same = held.get(sms.concat.index)
        if same is not None:
            before = decode_pdu(same)
            assert isinstance(before, SmsDeliver)
            if (before.alphabet, before.user_data) == (sms.alphabet, sms.user_data):
                self.counters.duplicates += 1
                return "duplicate part"
            detail = f"part {sms.concat.index} of {key.total} arrived twice, different"
            reason = "SMS_PARTS_INCONSISTENT"
            return await self._reject(db, received_ms, sms.sender, reason, detail, raw)
        await db.execute(
            "INSERT INTO sms_part VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*where, sms.concat.index, raw, received_ms),
        )
        held[sms.concat.index] = raw
        if len(held) < key.total:
            self.counters.parts_waiting += 1
            return f"part {sms.concat.index} of {key.total}"
        await db.execute(
            "DELETE FROM sms_part WHERE sender = ? AND reference = ? AND reference_bits = ?"
            " AND total = ?",
            where,
        )
        parts = [decode_pdu(pdu) for pdu in held.values()]
        delivered = [p for p in parts if isinstance(p, SmsDeliver)]
        return await self._evaluate(db, delivered, b"".join(held.values()), received_ms)

    async def _evaluate(
        self, db: aiosqlite.Connection, parts: Sequence[SmsDeliver], raw: bytes, received_ms: int
    ) -> str:
        sender = parts[0].sender
        try:
            frame = decode_hourly(parts, self._registry.key_for)
        except NotAFrame as exc:
            sent = exc.sent_at.isoformat()
            text = exc.text if exc.text is not None else exc.data.hex()
            detail = f"from {sender} sent {sent}: {text}"
            return await self._reject(db, received_ms, sender, "SMS_NOT_A_FRAME", detail, raw)
        except SmsPartsError as exc:
            reason = "SMS_PARTS_INCONSISTENT"
            return await self._reject(db, received_ms, sender, reason, exc.reason, raw)
        except DecodeError as exc:
            return await self._reject(
                db, received_ms, sender, exc.name, exc.reason, exc.raw or raw,
                terminal_id=exc.terminal_id,
            )  # fmt: skip
        return await self._batch(db, frame, sender, raw, received_ms)

    async def _batch(
        self, db: aiosqlite.Connection, frame: Hourly, sender: str, raw: bytes, received_ms: int
    ) -> str:
        terminal = self._registry.terminals.get(frame.terminal_id)
        if terminal is not None and terminal.phone and terminal.phone != sender:
            log.warning(
                "sms_sender_differs",
                terminal_id=frame.terminal_id,
                sender=sender,
                registered=terminal.phone,
                action="update the registry if the terminal's SIM changed",
            )
        identity = hashlib.sha256(repr((frame.hour_start, frame.counts)).encode()).digest()
        async with db.execute(
            "SELECT digest FROM sms_batch WHERE terminal_id = ? AND batch_seq = ?",
            (frame.terminal_id, frame.batch_seq),
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None:
            if bytes(row[0]) == identity:
                self.counters.duplicates += 1
                return "duplicate batch"
            detail = f"batch_seq {frame.batch_seq} was taken before with other counts"
            return await self._reject(
                db, received_ms, sender, "BATCH_SEQ_CONFLICT", detail, raw,
                terminal_id=frame.terminal_id, seq=frame.batch_seq,
            )  # fmt: skip
        await db.execute(
            "INSERT INTO sms_batch VALUES (?, ?, ?, ?)",
            (frame.terminal_id, frame.batch_seq, identity, received_ms),
        )
        rows = self._hour_rows(frame, received_ms)
        await insert_hours(db, rows)
        self.counters.batches += 1
        self.counters.hours += frame.n_hours
        return f"batch {frame.batch_seq} of terminal {frame.terminal_id}: {frame.n_hours} hours"

    def _hour_rows(self, frame: Hourly, received_ms: int) -> list[HourCountRow]:
        offsets = self._offsets.get(frame.terminal_id)
        if offsets is None:
            offsets = UtcOffsets(self._registry.zone_for(frame.terminal_id))
            self._offsets[frame.terminal_id] = offsets
        rows = []
        for i, counts in enumerate(frame.counts):
            hour = frame.hour_start + 3600 * i
            offset = offsets(hour)
            rows += [
                HourCountRow(
                    frame.terminal_id,
                    hour,
                    offset,
                    button,
                    count,
                    frame.batch_seq,
                    TRANSPORT,
                    received_ms,
                )
                for button, count in enumerate(counts, start=1)
            ]
        return rows

    async def _reject(  # noqa: PLR0917
        self,
        db: aiosqlite.Connection,
        received_ms: int,
        peer: str,
        reason: str,
        detail: str,
        raw: bytes,
        *,
        terminal_id: int | None = None,
        seq: int | None = None,
    ) -> str:
        row = RejectRow(received_ms, TRANSPORT, peer, terminal_id, seq, reason, detail, raw)
        await insert_rejects(db, [row])
        self.counters.quarantined[reason] = self.counters.quarantined.get(reason, 0) + 1
        log.warning("sms_quarantined", reason=reason, peer=peer, terminal_id=terminal_id,
                    detail=detail[:200], action="see the quarantine export")  # fmt: skip
        return f"quarantined: {reason}"

    async def expire(self) -> int:
        """Quarantine parts waiting longer than the reassembly timeout; forget old digests."""
        now_ms = int(self._clock() * 1000)
        return await self._outbox.apply(lambda db: self._expire_in(db, now_ms))

    async def _expire_in(self, db: aiosqlite.Connection, now_ms: int) -> int:
        async with db.execute(
            "SELECT sender, reference, reference_bits, total, group_concat(part),"
            " min(received_at_ms) FROM sms_part GROUP BY 1, 2, 3, 4 HAVING min(received_at_ms) < ?",
            (now_ms - self._timeout_ms,),
        ) as cursor:
            stale = list(await cursor.fetchall())
        for sender, reference, bits, total, present, first_ms in stale:
            where = (sender, reference, bits, total)
            async with db.execute(
                "SELECT pdu FROM sms_part WHERE sender = ? AND reference = ? AND"
                " reference_bits = ? AND total = ? ORDER BY part",
                where,
            ) as cursor:
                raw = b"".join(bytes(r[0]) for r in await cursor.fetchall())
            detail = (
                f"parts {present} of {total} (reference {reference}) from {sender};"
                f" the first arrived {iso_utc(first_ms / 1000)}, the rest never did"
            )
            await self._reject(db, now_ms, sender, "SMS_INCOMPLETE", detail, raw)
            await db.execute(
                "DELETE FROM sms_part WHERE sender = ? AND reference = ? AND reference_bits = ?"
                " AND total = ?",
                where,
            )
        await db.execute("DELETE FROM sms_seen WHERE received_at_ms < ?", (now_ms - _SEEN_KEEP_MS,))
        return len(stale)


def _digest(raw: bytes) -> bytes:
    """The message without its SMSC field: the same message whichever way it was read."""
    skip = 1 + raw[0] if raw and 1 + raw[0] <= len(raw) else 0
    return hashlib.sha256(raw[skip:]).digest()
