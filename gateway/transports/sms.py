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

import structlog

from gateway.intake.ingest import Ingest, Origin, SmsTaken
from gateway.intake.sms_ledger import PartGroup, SmsLedger
from gateway.privacy import mask_number
from gateway.registry.terminals import Registry
from gateway.rows import RejectRow, iso_utc
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
    """The modem's sink: each PDU through :meth:`Ingest.sms`, in one transaction."""

    def __init__(
        self,
        registry: Registry,
        ingest: Ingest,
        *,
        reassembly_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._ingest = ingest
        self._timeout_ms = int(reassembly_timeout_s * 1000)
        self._clock = clock
        self.counters = SmsCounters()

    async def take(self, pdu_hex: str, source: str) -> str:
        """Commit what the PDU carries; return what became of it (for logs and tests).

        Raises OutboxBusy when the outbox cannot commit: the message stays on the modem.
        """
        origin = Origin(TRANSPORT, source, self._clock())
        try:
            raw = bytes.fromhex(pdu_hex)
        except ValueError:
            raw = pdu_hex.encode("latin-1", "replace")
        taken = await self._ingest.sms(lambda ledger: self._take_in(ledger, raw, origin))
        self._count(taken)
        log.info("sms_taken", source=source, outcome=taken.outcome)
        return taken.outcome

    def _count(self, taken: SmsTaken) -> None:
        """Counted once committed: a rolled-back transaction counts nothing."""
        c = self.counters
        c.messages += taken.new_message
        c.duplicates += taken.duplicate
        c.parts_waiting += taken.part_waiting
        for row in taken.quarantined:
            c.quarantined[row.reason] = c.quarantined.get(row.reason, 0) + 1
            _log_quarantined(row)
        if taken.batch is not None:
            c.batches += 1
            c.hours += taken.batch.n_hours

    async def _take_in(self, ledger: SmsLedger, raw: bytes, origin: Origin) -> SmsTaken:
        digest = _digest(raw)
        if await ledger.seen(digest):
            return SmsTaken("duplicate", new_message=False, duplicate=True)
        await ledger.remember(digest, origin.received_at_ms)
        try:
            sms = decode_pdu(raw)
        except SmsDecodeError as exc:
            reject = _reject(origin, origin.peer, "SMS_BAD_PDU", exc.reason, raw)
            return await _quarantined(ledger, reject)
        if isinstance(sms, StatusReport):
            detail = f"status {sms.status}"
            reject = _reject(origin, sms.recipient, "SMS_STATUS_REPORT", detail, raw)
            return await _quarantined(ledger, reject)
        key = part_key(sms)
        if key is None or key.total == 1:
            return await self._evaluate(ledger, [sms], raw, origin)
        return await self._part(ledger, sms, raw, origin)

    async def _part(
        self, ledger: SmsLedger, sms: SmsDeliver, raw: bytes, origin: Origin
    ) -> SmsTaken:
        key = part_key(sms)
        assert key is not None
        assert sms.concat is not None
        group = PartGroup(key.sender, key.reference, key.reference_bits, key.total)
        held = await ledger.held_parts(group)
        same = held.get(sms.concat.index)
        if same is not None:
            before = decode_pdu(same)
            assert isinstance(before, SmsDeliver)
            if (before.alphabet, before.user_data) == (sms.alphabet, sms.user_data):
                return SmsTaken("duplicate part", duplicate=True)
            detail = f"part {sms.concat.index} of {key.total} arrived twice, different"
            reject = _reject(origin, sms.sender, "SMS_PARTS_INCONSISTENT", detail, raw)
            return await _quarantined(ledger, reject)
        await ledger.hold_part(group, sms.concat.index, raw, origin.received_at_ms)
        held[sms.concat.index] = raw
        if len(held) < key.total:
            return SmsTaken(f"part {sms.concat.index} of {key.total}", part_waiting=True)
        await ledger.release_parts(group)
        parts = [decode_pdu(pdu) for pdu in held.values()]
        delivered = [p for p in parts if isinstance(p, SmsDeliver)]
        return await self._evaluate(ledger, delivered, b"".join(held.values()), origin)

    async def _evaluate(
        self, ledger: SmsLedger, parts: Sequence[SmsDeliver], raw: bytes, origin: Origin
    ) -> SmsTaken:
        sender = parts[0].sender
        try:
            frame = decode_hourly(parts, self._registry.key_for)
        except NotAFrame as exc:
            sent = exc.sent_at.isoformat()
            text = exc.text if exc.text is not None else exc.data.hex()
            detail = f"from {sender} sent {sent}: {text}"
            return await _quarantined(
                ledger, _reject(origin, sender, "SMS_NOT_A_FRAME", detail, raw)
            )
        except SmsPartsError as exc:
            reason = "SMS_PARTS_INCONSISTENT"
            return await _quarantined(ledger, _reject(origin, sender, reason, exc.reason, raw))
        except DecodeError as exc:
            reject = _reject(
                origin, sender, exc.name, exc.reason, exc.raw or raw, terminal_id=exc.terminal_id
            )
            return await _quarantined(ledger, reject)
        return await self._batch(ledger, frame, sender, raw, origin)

    async def _batch(
        self, ledger: SmsLedger, frame: Hourly, sender: str, raw: bytes, origin: Origin
    ) -> SmsTaken:
        terminal = self._registry.terminals.get(frame.terminal_id)
        if terminal is not None and terminal.phone and terminal.phone != sender:
            log.warning(
                "sms_sender_differs",
                terminal_id=frame.terminal_id,
                sender=mask_number(sender),
                registered=mask_number(terminal.phone),
                action="update the registry if the terminal's SIM changed",
            )
        identity = hashlib.sha256(repr((frame.hour_start, frame.counts)).encode()).digest()
        taken_before = await ledger.batch_identity(frame.terminal_id, frame.batch_seq)
        if taken_before is not None:
            if taken_before == identity:
                return SmsTaken("duplicate batch", duplicate=True)
            detail = f"batch_seq {frame.batch_seq} was taken before with other counts"
            reject = _reject(
                origin, sender, "BATCH_SEQ_CONFLICT", detail, raw,
                terminal_id=frame.terminal_id, seq=frame.batch_seq,
            )  # fmt: skip
            return await _quarantined(ledger, reject)
        await ledger.record_batch(
            frame.terminal_id, frame.batch_seq, identity, origin.received_at_ms
        )
        await ledger.add_hours(self._ingest.place_hours(frame, origin))
        outcome = f"batch {frame.batch_seq} of terminal {frame.terminal_id}: {frame.n_hours} hours"
        return SmsTaken(outcome, batch=frame, origin=Origin(TRANSPORT, sender, origin.received_at))

    async def expire(self) -> int:
        """Quarantine parts waiting longer than the reassembly timeout; forget old digests."""
        origin = Origin(TRANSPORT, "", self._clock())
        taken = await self._ingest.sms(lambda ledger: self._expire_in(ledger, origin))
        self._count(taken)
        return len(taken.quarantined)

    async def _expire_in(self, ledger: SmsLedger, origin: Origin) -> SmsTaken:
        now_ms = origin.received_at_ms
        rejects = []
        for stale in await ledger.stale_groups(now_ms - self._timeout_ms):
            g = stale.group
            detail = (
                f"parts {stale.present} of {g.total} (reference {g.reference}) from {g.sender};"
                f" the first arrived {iso_utc(stale.first_received_ms / 1000)}, the rest never did"
            )
            rejects.append(_reject(origin, g.sender, "SMS_INCOMPLETE", detail, stale.raw))
            await ledger.release_parts(g)
        await ledger.quarantine(rejects)
        await ledger.forget_seen_before(now_ms - _SEEN_KEEP_MS)
        return SmsTaken("expired", new_message=False, quarantined=tuple(rejects))


async def _quarantined(ledger: SmsLedger, reject: RejectRow) -> SmsTaken:
    await ledger.quarantine([reject])
    return SmsTaken(f"quarantined: {reject.reason}", quarantined=(reject,))


def _reject(
    origin: Origin,
    peer: str,
    reason: str,
    detail: str,
    raw: bytes,
    *,
    terminal_id: int | None = None,
    seq: int | None = None,
) -> RejectRow:
    return RejectRow(origin.received_at_ms, TRANSPORT, peer, terminal_id, seq, reason, detail, raw)


def _log_quarantined(row: RejectRow) -> None:
    masked = mask_number(row.peer)
    log.warning(
        "sms_quarantined",
        reason=row.reason,
        peer=masked,
        terminal_id=row.terminal_id,
        detail=row.detail.replace(row.peer, masked)[:200] if row.peer else row.detail[:200],
        action="see the quarantine export",
    )


def _digest(raw: bytes) -> bytes:
    """The message without its SMSC field: the same message whichever way it was read."""
    skip = 1 + raw[0] if raw and 1 + raw[0] <= len(raw) else 0
    return hashlib.sha256(raw[skip:]).digest()
