"""The outbox's file: its schema and statements, migrations, durability settings and budget.

See :mod:`gateway.intake.outbox` for why WAL with ``synchronous=FULL``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite

from gateway.rows import PressRow
from gateway.sqlitedb import migrate

PAGE_SIZE = 4096

SCHEMA_V1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE press (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    utc_offset_s INTEGER NOT NULL,
    button INTEGER NOT NULL,
    followup INTEGER NOT NULL,
    clock_corrected INTEGER NOT NULL,
    transport TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    UNIQUE (terminal_id, seq)
);
CREATE TABLE rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_ms INTEGER NOT NULL,
    transport TEXT NOT NULL,
    peer TEXT NOT NULL,
    terminal_id INTEGER,
    seq INTEGER,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE UNIQUE INDEX rejected_record ON rejected (terminal_id, seq, reason) WHERE seq IS NOT NULL;
CREATE TABLE terminal_seq (terminal_id INTEGER PRIMARY KEY, max_seq INTEGER NOT NULL);
"""
# Version 2: SMS. hour_count is forwarded like press; the sms_ tables stay here
# (gateway/transports/sms.py): batches seen, parts waiting for the rest of their
# message, and digests of messages already taken, so that a message read twice
# (an indication repeated, routed and stored, or not deleted before a crash) is
# taken once.
SCHEMA_V2 = """
CREATE TABLE hour_count (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal_id INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    utc_offset_s INTEGER NOT NULL,
    button INTEGER NOT NULL,
    count INTEGER NOT NULL,
    batch_seq INTEGER NOT NULL,
    transport TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL
);
CREATE TABLE sms_batch (
    terminal_id INTEGER NOT NULL,
    batch_seq INTEGER NOT NULL,
    digest BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, batch_seq)
) WITHOUT ROWID;
CREATE TABLE sms_part (
    sender TEXT NOT NULL,
    reference INTEGER NOT NULL,
    reference_bits INTEGER NOT NULL,
    total INTEGER NOT NULL,
    part INTEGER NOT NULL,
    pdu BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sender, reference, reference_bits, total, part)
) WITHOUT ROWID;
CREATE TABLE sms_seen (digest BLOB PRIMARY KEY, received_at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX sms_seen_time ON sms_seen (received_at_ms);
"""
# A new outbox names its gateway once, in the transaction that makes it.
_NAME_GATEWAY = "INSERT INTO meta (name, value) VALUES ('gateway_id', lower(hex(randomblob(8))))"
# Version 3: web smileys (gateway/transports/web.py). A press says how it came
# (ui); web_client holds the highest seq of each browser (client) of a web
# smiley committed so far, so a resent press (seq at or below it) is taken once.
SCHEMA_V3 = """
ALTER TABLE press ADD COLUMN ui TEXT NOT NULL DEFAULT '';
CREATE TABLE web_client (
    web_smiley_id INTEGER NOT NULL,
    client TEXT NOT NULL,
    acked INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (web_smiley_id, client)
) WITHOUT ROWID;
CREATE INDEX web_client_seen ON web_client (last_seen_ms);
"""
MIGRATIONS = (SCHEMA_V1 + ";" + _NAME_GATEWAY, SCHEMA_V2, SCHEMA_V3)
SCHEMA_VERSION = len(MIGRATIONS)


INSERT_PRESS = (
    "INSERT OR IGNORE INTO press (terminal_id, seq, occurred_at, utc_offset_s, button, followup,"
    " clock_corrected, transport, received_at_ms, ui) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


PENDING_PRESS = (
    "SELECT id, terminal_id, seq, occurred_at, utc_offset_s, button, followup, clock_corrected,"
    " transport, received_at_ms, ui FROM press WHERE id > ? ORDER BY id LIMIT ?"
)
# The same rows as one JSON text (see _pending_presses), each a PressRow's values
# (clock_corrected a JSON boolean), and the highest id.
PENDING_PRESS_JSON = (
    "SELECT json_group_array(json_array(terminal_id, seq, occurred_at, utc_offset_s, button,"
    " followup, json(CASE WHEN clock_corrected THEN 'true' ELSE 'false' END), transport,"
    " received_at_ms, ui)),"
    " max(id) FROM (SELECT * FROM press WHERE id > ? ORDER BY id LIMIT ?)"
)


def press_row(row: Any) -> PressRow:
    """A row of PENDING_PRESS as the PressRow it holds (its first column is the outbox id)."""
    _, terminal_id, seq, at, offset, button, followup, corrected, transport, received, ui = row
    return PressRow(
        terminal_id, seq, at, offset, button, followup, bool(corrected), transport, received, ui
    )


UPSERT_SEQ = (
    "INSERT INTO terminal_seq (terminal_id, max_seq) VALUES (?, ?) ON CONFLICT (terminal_id)"
    " DO UPDATE SET max_seq = max(max_seq, excluded.max_seq)"
)


async def prepare(db: aiosqlite.Connection, max_mb: int) -> None:
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("PRAGMA busy_timeout=5000")
    await migrate(db, MIGRATIONS, "outbox", when_new=[f"PRAGMA page_size={PAGE_SIZE}"])
    await set_budget(db, max_mb)


async def set_budget(db: aiosqlite.Connection, max_mb: int) -> None:
    """Cap the outbox file; SQLite then refuses inserts past it with SQLITE_FULL."""
    async with db.execute("PRAGMA page_size") as cursor:
        row = await cursor.fetchone()
    page_size = row[0] if row else PAGE_SIZE
    await db.execute(f"PRAGMA max_page_count={max(1, max_mb * 1024 * 1024 // page_size)}")


async def has_json(db: aiosqlite.Connection) -> bool:
    """Whether this SQLite has the JSON functions (built in since 3.38, optional before)."""
    try:
        async with db.execute("SELECT json_extract('[1]', '$[0]')") as cursor:
            row = await cursor.fetchone()
    except sqlite3.OperationalError:
        return False
    return row is not None and row[0] == 1


async def load_state(db: aiosqlite.Connection) -> tuple[str, dict[int, int]]:
    async with db.execute("SELECT value FROM meta WHERE name = 'gateway_id'") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    async with db.execute("SELECT terminal_id, max_seq FROM terminal_seq") as cursor:
        seqs: dict[int, int] = {tid: seq for tid, seq in await cursor.fetchall()}  # noqa: C416
    return str(row[0]), seqs
