"""Durable outbox: every press is committed here before it is acknowledged.

One writer task owns the write connection and commits in groups: all commit
requests waiting when a transaction starts share it (one fsync for many
frames), and each request's future resolves only after that COMMIT returned.

Durability: WAL with ``synchronous=FULL``. In WAL mode ``NORMAL`` survives a
process crash but may lose the last transactions on power loss, because the
WAL is not synced at each commit; an ACK promises the press survives a power
cut, so each commit must reach the disk.

The disk budget (``outbox_max_mb``) is enforced by SQLite itself through
``max_page_count``: past it an insert fails with SQLITE_FULL exactly like a
full disk, and both become OutboxBusy (NAK BUSY). Deletes of forwarded rows run
in their own transaction so that a full outbox can always drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import operator
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from gateway.errors import OutboxBusy
from gateway.intake.outbox_schema import (
    INSERT_PRESS,
    PENDING_PRESS,
    PENDING_PRESS_JSON,
    UPSERT_SEQ,
    has_json,
    load_state,
    prepare,
    press_row,
)
from gateway.intake.sms_ledger import SmsLedger, insert_rejects
from gateway.intake.web_ledger import WebLedger
from gateway.rows import HourCountRow, PressRow, RejectRow
from gateway.sqlitedb import execute_rows

log = structlog.get_logger("gateway.outbox")

T = TypeVar("T")

_TERMINAL_ID = operator.itemgetter(0)  # of a PressRow
_SEQ = operator.itemgetter(1)


@dataclass(slots=True)
class _Commit:
    presses: Sequence[PressRow]
    rejects: Sequence[RejectRow]
    done: asyncio.Future[None]


@dataclass(slots=True)
class _Delete:
    press_upto: int | None
    hour_upto: int | None
    reject_ids: Sequence[int]
    done: asyncio.Future[None]


@dataclass(slots=True)
class _Apply:
    work: Callable[[Any], Awaitable[Any]]
    ledger: Callable[[aiosqlite.Connection], Any]  # SmsLedger or WebLedger, for this transaction
    done: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class Pending:
    """The oldest rows waiting to be forwarded.

    Presses are read in id order, so the batch is every row up to ``press_upto``:
    ids only grow (AUTOINCREMENT), and one forwarder deletes at a time.
    """

    presses: list[PressRow] = field(default_factory=list)
    press_upto: int | None = None
    rejects: list[RejectRow] = field(default_factory=list)
    reject_ids: list[int] = field(default_factory=list)
    hours: list[HourCountRow] = field(default_factory=list)
    hour_upto: int | None = None

    def __len__(self) -> int:
        return len(self.presses) + len(self.rejects) + len(self.hours)


@dataclass(frozen=True, slots=True)
class Backlog:
    presses: int
    rejects: int
    oldest_received_at_ms: int | None
    hours: int = 0


class Outbox:
    """The gateway's durable queue; open with :meth:`open`, then run :meth:`run`."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        gateway_id: str,
        max_seqs: dict[int, int],
        batch_max: int,
        queue_size: int,
        json_rows: bool = False,
        new_rows: asyncio.Event | None = None,
    ) -> None:
        self._writer = writer
        self._new_rows = new_rows or asyncio.Event()
        """Set after each commit that added rows to forward: the forwarder waits on it."""
        self._json = json_rows
        self._reader = reader
        self.gateway_id = gateway_id
        self._max_seqs = max_seqs
        self._batch_max = batch_max
        self._jobs: asyncio.Queue[_Commit | _Delete | _Apply] = asyncio.Queue(queue_size)
        self.committed_presses = 0  # rows new to the outbox (a resend is not counted)
        self.committed_rejects = 0
        self.commits = 0
        self.busy_errors = 0
        # Ids only grow (AUTOINCREMENT), so reading strictly after what was forwarded
        # never hands out a row twice, even from a reader snapshot a moment old.
        self._forwarded_press_id = 0
        self._forwarded_reject_id = 0
        self._forwarded_hour_id = 0

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        max_mb: int,
        batch_max: int = 5000,
        queue_size: int = 10000,
        json_rows: bool | None = None,
        new_rows: asyncio.Event | None = None,
    ) -> Outbox:
        """Open (or create) the outbox at ``path``.

        ``json_rows`` reads presses to forward as one JSON text per batch; None
        (the default) does so when this SQLite has the JSON functions.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path, isolation_level=None)
        try:
            await prepare(writer, max_mb)
            gateway_id, max_seqs = await load_state(writer)
            if json_rows is None:
                json_rows = await has_json(writer)
            reader = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            await writer.close()
            raise
        return cls(
            writer,
            reader,
            gateway_id=gateway_id,
            max_seqs=max_seqs,
            batch_max=batch_max,
            queue_size=queue_size,
            json_rows=json_rows,
            new_rows=new_rows,
        )

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    def next_seq(self, terminal_id: int) -> int:
        """One more than the highest seq committed for the terminal, 0 if none (WELCOME)."""
        highest = self._max_seqs.get(terminal_id)
        return 0 if highest is None else highest + 1

    async def commit(self, presses: Sequence[PressRow], rejects: Sequence[RejectRow] = ()) -> None:
        """Return once the rows are durably committed; raise OutboxBusy if they are not."""
        done = asyncio.get_running_loop().create_future()
        await self._jobs.put(_Commit(presses, rejects, done))
        await done

    @property
    def new_rows(self) -> asyncio.Event:
        """Set once a commit added rows to forward; whoever forwards them clears it."""
        return self._new_rows

    async def sms_transaction(self, work: Callable[[SmsLedger], Awaitable[T]]) -> T:
        """Run ``work`` on the SMS ledger in a write transaction of its own; return its result.

        The transaction is rolled back if ``work`` raises; a database error
        becomes OutboxBusy, anything else is raised as it is.
        """
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._jobs.put(_Apply(work, SmsLedger, done))
        return await done

    async def web_transaction(self, work: Callable[[WebLedger], Awaitable[T]]) -> T:
        """As :meth:`sms_transaction`, on the web smileys' ledger (gateway/intake/web_ledger.py)."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._jobs.put(_Apply(work, WebLedger, done))
        return await done

    async def forwarded(self, pending: Pending) -> None:
        """Delete rows the central store has committed."""
        done = asyncio.get_running_loop().create_future()
        await self._jobs.put(
            _Delete(pending.press_upto, pending.hour_upto, pending.reject_ids, done)
        )
        await done
        if pending.hour_upto is not None:
            self._forwarded_hour_id = max(self._forwarded_hour_id, pending.hour_upto)
        if pending.press_upto is not None:
            self._forwarded_press_id = max(self._forwarded_press_id, pending.press_upto)
        if pending.reject_ids:
            self._forwarded_reject_id = max(self._forwarded_reject_id, *pending.reject_ids)

    async def pending(self, limit: int) -> Pending:
        """The oldest rows not yet forwarded, at most ``limit`` of each kind."""
        presses, press_upto = await self._pending_presses(limit)
        async with self._reader.execute(
            "SELECT id, received_at_ms, transport, peer, terminal_id, seq, reason, detail, raw"
            " FROM rejected WHERE id > ? ORDER BY id LIMIT ?",
            (self._forwarded_reject_id, limit),
        ) as cursor:
            reject_rows = list(await cursor.fetchall())
        async with self._reader.execute(
            "SELECT id, terminal_id, hour, utc_offset_s, button, count, batch_seq, transport,"
            " received_at_ms FROM hour_count WHERE id > ? ORDER BY id LIMIT ?",
            (self._forwarded_hour_id, limit),
        ) as cursor:
            hour_rows = list(await cursor.fetchall())
        return Pending(
            hours=[HourCountRow(*row[1:]) for row in hour_rows],
            hour_upto=hour_rows[-1][0] if hour_rows else None,
            presses=presses,
            press_upto=press_upto,
            rejects=[RejectRow(*row[1:]) for row in reject_rows],
            reject_ids=[row[0] for row in reject_rows],
        )

    async def _pending_presses(self, limit: int) -> tuple[list[PressRow], int | None]:
        """The next ``limit`` presses after the last forwarded one, and the highest id of them."""
        after = self._forwarded_press_id
        if not self._json:
            async with self._reader.execute(PENDING_PRESS, (after, limit)) as cursor:
                rows = list(await cursor.fetchall())
            return [press_row(row) for row in rows], rows[-1][0] if rows else None
        # One JSON text for the batch: fetching row by row gives up and takes back
        # the GIL at each row, as executemany does (see execute_rows); and the
        # rows become PressRows in C, without a Python step per row.
        async with self._reader.execute(PENDING_PRESS_JSON, (after, limit)) as cursor:
            row = await cursor.fetchone()
        assert row is not None  # an aggregate always has its row
        values: list[list[Any]] = json.loads(row[0])
        return list(map(tuple.__new__, itertools.repeat(PressRow), values)), row[1]

    async def backlog(self) -> Backlog:
        async with self._reader.execute(
            "SELECT (SELECT count(*) FROM press), (SELECT count(*) FROM rejected),"
            # SQLite's two-argument min() is NULL if either side is: coalesce first
            " min(coalesce((SELECT min(received_at_ms) FROM press), 1 << 62),"
            " coalesce((SELECT min(received_at_ms) FROM rejected), 1 << 62),"
            " coalesce((SELECT min(received_at_ms) FROM hour_count), 1 << 62)),"
            " (SELECT count(*) FROM hour_count)"
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        oldest = row[2] if row[2] != 1 << 62 else None
        return Backlog(row[0], row[1], oldest, row[3])

    async def run(self) -> None:
        """The single writer: take waiting jobs, commit them together, resolve them."""
        while True:
            jobs = [await self._jobs.get()]
            rows = _rows_in(jobs[0])
            while not self._jobs.empty() and rows < self._batch_max:
                job = self._jobs.get_nowait()
                jobs.append(job)
                rows += _rows_in(job)
            deletes = [j for j in jobs if isinstance(j, _Delete)]
            commits = [j for j in jobs if isinstance(j, _Commit)]
            if deletes:
                await self._settle(deletes, self._delete(deletes))
            if commits:
                await self._settle(commits, self._insert(commits))
            for job in jobs:
                if isinstance(job, _Apply):
                    await self._apply(job)

    async def _apply(self, job: _Apply) -> None:
        db = self._writer
        try:
            await db.execute("BEGIN IMMEDIATE")
            result = await job.work(job.ledger(db))
            await db.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:
            self.busy_errors += 1
            log.error("outbox_commit_failed", error=str(exc), jobs=1)
            await self._rollback()
            job.done.set_exception(_busy(exc))
        except Exception as exc:  # the work's own error: nothing of it stays
            await self._rollback()
            job.done.set_exception(exc)
        else:
            self.commits += 1
            self._new_rows.set()
            job.done.set_result(result)

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._writer.rollback()

    async def _settle(
        self, jobs: Sequence[_Commit] | Sequence[_Delete], work: Coroutine[None, None, None]
    ) -> None:
        try:
            await work
        except (sqlite3.Error, ValueError) as exc:
            self.busy_errors += 1
            log.error("outbox_commit_failed", error=str(exc), jobs=len(jobs))
            await self._rollback()
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(_busy(exc))
            return
        for job in jobs:
            if not job.done.done():
                job.done.set_result(None)

    async def _insert(self, jobs: Sequence[_Commit]) -> None:
        presses = list(itertools.chain.from_iterable(job.presses for job in jobs))
        rejects = [r for job in jobs for r in job.rejects]
        seqs: dict[int, int] = {}
        # A frame's rows lie together: per run of one terminal, max() in C, not a
        # Python step per press.
        for terminal_id, rows in itertools.groupby(presses, key=_TERMINAL_ID):
            highest = max(map(_SEQ, rows))
            if highest > seqs.get(terminal_id, -1):
                seqs[terminal_id] = highest
        for r in rejects:
            if r.seq is not None and r.terminal_id is not None:
                seqs[r.terminal_id] = max(r.seq, seqs.get(r.terminal_id, -1))
        db = self._writer
        await db.execute("BEGIN IMMEDIATE")
        inserted = 0
        if presses:
            inserted = await execute_rows(db, INSERT_PRESS, presses)  # resends are not
        if rejects:
            await insert_rejects(db, rejects)
        if seqs:
            await execute_rows(db, UPSERT_SEQ, list(seqs.items()))
        await db.execute("COMMIT")
        for terminal_id, seq in seqs.items():
            self._max_seqs[terminal_id] = max(seq, self._max_seqs.get(terminal_id, -1))
        self.commits += 1
        self.committed_presses += inserted
        self.committed_rejects += len(rejects)
        if inserted or rejects:
            self._new_rows.set()

    async def _delete(self, jobs: Sequence[_Delete]) -> None:
        db = self._writer
        await db.execute("BEGIN IMMEDIATE")
        upto = max((job.press_upto for job in jobs if job.press_upto is not None), default=None)
        reject_ids = [(i,) for job in jobs for i in job.reject_ids]
        if upto is not None:
            await db.execute("DELETE FROM press WHERE id <= ?", (upto,))
        hour_upto = max((job.hour_upto for job in jobs if job.hour_upto is not None), default=None)
        if hour_upto is not None:
            await db.execute("DELETE FROM hour_count WHERE id <= ?", (hour_upto,))
        if reject_ids:
            await db.executemany("DELETE FROM rejected WHERE id = ?", reject_ids)
        await db.execute("COMMIT")


def _rows_in(job: _Commit | _Delete | _Apply) -> int:
    if isinstance(job, _Commit):
        return len(job.presses) + len(job.rejects)
    if isinstance(job, _Delete):
        return len(job.reject_ids) + 1
    return 1


def _busy(cause: BaseException) -> OutboxBusy:
    """OutboxBusy for a database error, keeping it as the cause (``__cause__``)."""
    busy = OutboxBusy(f"outbox cannot commit: {cause}")
    busy.__cause__ = cause
    return busy
