"""The outbox's web smiley bookkeeping: presses from browsers, taken once per (client, seq).

A browser (a client, named by the id its page keeps) numbers its presses from
0; ``web_client`` holds, per web smiley and client, the highest seq committed.
The page resends every press it has no acknowledgement for, in seq order and
in one request, so a press at or below that seq is a resend and is skipped.
Each new press gets the web smiley's own next ``seq`` (``terminal_seq``, the
terminals' counter: one id space), so the central store deduplicates it by
(terminal_id, seq) like any other. A ledger lives for one write transaction of
:meth:`gateway.intake.outbox.Outbox.web_transaction`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from gateway.intake.outbox_schema import INSERT_PRESS, UPSERT_SEQ
from gateway.rows import PressRow
from gateway.sqlitedb import execute_rows


@dataclass(frozen=True, slots=True)
class WebPress:
    """A press of a browser, placed in time; its ``row.seq`` is set at commit."""

    client_seq: int
    row: PressRow


@dataclass(frozen=True, slots=True)
class WebTaken:
    """What one request's transaction did."""

    acked: int | None
    """The highest seq of this client committed, counting earlier requests."""
    new: int
    resent: int


class WebLedger:
    """Reads and writes of the web smiley tables, inside one outbox transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def acked(self, web_smiley_id: int, client: str) -> int | None:
        async with self._db.execute(
            "SELECT acked FROM web_client WHERE web_smiley_id = ? AND client = ?",
            (web_smiley_id, client),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def forget_clients_before(self, seen_ms: int) -> int:
        """Forget browsers not seen since ``seen_ms``; return how many (the table stays bounded).

        A page resends only what it has no acknowledgement for, within minutes
        of an answer it lost; a browser silent for a month has nothing to resend.
        """
        cursor = await self._db.execute("DELETE FROM web_client WHERE last_seen_ms < ?", (seen_ms,))
        return cursor.rowcount

    async def take(
        self, web_smiley_id: int, client: str, presses: Sequence[WebPress], received_ms: int
    ) -> WebTaken:
        """Insert the presses not taken before, each with the web smiley's next seq."""
        acked = await self.acked(web_smiley_id, client)
        floor = -1 if acked is None else acked
        fresh: dict[int, WebPress] = {}
        for press in sorted(presses, key=lambda p: p.client_seq):
            if press.client_seq > floor and press.client_seq not in fresh:
                fresh[press.client_seq] = press
        if not fresh:
            return WebTaken(acked, 0, len(presses))
        async with self._db.execute(
            "SELECT max_seq FROM terminal_seq WHERE terminal_id = ?", (web_smiley_id,)
        ) as cursor:
            row = await cursor.fetchone()
        first = 0 if row is None else int(row[0]) + 1
        rows = [p.row._replace(seq=first + i) for i, p in enumerate(fresh.values())]
        await execute_rows(self._db, INSERT_PRESS, rows)
        await execute_rows(self._db, UPSERT_SEQ, [(web_smiley_id, first + len(rows) - 1)])
        highest = max(fresh)
        await self._db.execute(
            "INSERT INTO web_client (web_smiley_id, client, acked, last_seen_ms)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (web_smiley_id, client) DO UPDATE"
            " SET acked = max(acked, excluded.acked), last_seen_ms = excluded.last_seen_ms",
            (web_smiley_id, client, highest, received_ms),
        )
        return WebTaken(max(highest, floor), len(rows), len(presses) - len(rows))
