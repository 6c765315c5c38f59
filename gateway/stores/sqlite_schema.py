"""The SQLite store's schema: its migrations in order (run by gateway.sqlitedb.migrate)."""

from __future__ import annotations

_SCHEMA_V1 = """
CREATE TABLE company (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE location (
    id INTEGER PRIMARY KEY, company TEXT NOT NULL, name TEXT NOT NULL,
    parent INTEGER, timezone TEXT
);
CREATE TABLE survey (
    id INTEGER PRIMARY KEY, company TEXT NOT NULL, question TEXT NOT NULL,
    locale TEXT NOT NULL, scale TEXT NOT NULL, misuse_interval_s INTEGER NOT NULL
);
CREATE TABLE terminal (
    id INTEGER PRIMARY KEY, key BLOB NOT NULL, location INTEGER NOT NULL,
    survey INTEGER NOT NULL, name TEXT, phone TEXT
);
CREATE TABLE press (
    terminal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    utc_offset_s INTEGER NOT NULL,
    precision TEXT NOT NULL DEFAULT 'second',
    button INTEGER NOT NULL,
    followup INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    transport TEXT NOT NULL,
    clock_corrected INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, seq)
) WITHOUT ROWID;
CREATE INDEX press_time ON press (occurred_at);
CREATE TABLE rejected (
    uid TEXT PRIMARY KEY,
    received_at_ms INTEGER NOT NULL,
    transport TEXT NOT NULL,
    peer TEXT NOT NULL,
    terminal_id INTEGER,
    seq INTEGER,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE INDEX rejected_time ON rejected (received_at_ms);
"""
# Version 2: misuse flags (gateway/stores/misuse.py) and hour-precision counts.
_SCHEMA_V2 = """
ALTER TABLE press ADD COLUMN misuse INTEGER NOT NULL DEFAULT 0;
CREATE INDEX press_terminal_time ON press (terminal_id, occurred_at, seq);
CREATE TABLE hourly (
    terminal_id INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    utc_offset_s INTEGER NOT NULL,
    button INTEGER NOT NULL,
    count INTEGER NOT NULL,
    batch_seq INTEGER NOT NULL,
    transport TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, hour, button)
) WITHOUT ROWID;
CREATE INDEX hourly_time ON hourly (hour);
"""
# Version 3: hourly results per survey, as the PostgreSQL store keeps them (see
# its 0003 migration), so a year of a survey's results reads thousands of rows.
# Triggers keep it: one on each press actually inserted (a resend ignored by
# INSERT OR IGNORE fires nothing), one on each misuse flag that changes. hour
# is the instant the local hour began (local time = hour + utc_offset_s); a
# terminal not in the registry counts under survey -1.
_SCHEMA_V3 = """
CREATE TABLE press_hourly_survey (
    survey INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    utc_offset_s INTEGER NOT NULL,
    button INTEGER NOT NULL,
    misuse INTEGER NOT NULL,
    presses INTEGER NOT NULL,
    PRIMARY KEY (survey, hour, utc_offset_s, button, misuse)
) WITHOUT ROWID;
INSERT INTO press_hourly_survey (survey, hour, utc_offset_s, button, misuse, presses)
SELECT coalesce(t.survey, -1),
       p.occurred_at - ((p.occurred_at + p.utc_offset_s) % 3600 + 3600) % 3600,
       p.utc_offset_s, p.button, p.misuse, sum(p.count)
FROM press AS p LEFT JOIN terminal AS t ON t.id = p.terminal_id
GROUP BY 1, 2, 3, 4, 5;
CREATE TRIGGER press_counted AFTER INSERT ON press BEGIN
    INSERT INTO press_hourly_survey (survey, hour, utc_offset_s, button, misuse, presses)
    VALUES (
        coalesce((SELECT survey FROM terminal WHERE id = NEW.terminal_id), -1),
        NEW.occurred_at - ((NEW.occurred_at + NEW.utc_offset_s) % 3600 + 3600) % 3600,
        NEW.utc_offset_s, NEW.button, NEW.misuse, NEW.count
    )
    ON CONFLICT (survey, hour, utc_offset_s, button, misuse)
    DO UPDATE SET presses = presses + excluded.presses;
END;
CREATE TRIGGER press_reflagged AFTER UPDATE OF misuse ON press
WHEN OLD.misuse <> NEW.misuse BEGIN
    INSERT INTO press_hourly_survey (survey, hour, utc_offset_s, button, misuse, presses)
    SELECT coalesce((SELECT survey FROM terminal WHERE id = NEW.terminal_id), -1),
           NEW.occurred_at - ((NEW.occurred_at + NEW.utc_offset_s) % 3600 + 3600) % 3600,
           NEW.utc_offset_s, NEW.button, flag.misuse, flag.delta
    FROM (SELECT NEW.misuse AS misuse, NEW.count AS delta
          UNION ALL SELECT OLD.misuse, -OLD.count) AS flag
    WHERE true
    ON CONFLICT (survey, hour, utc_offset_s, button, misuse)
    DO UPDATE SET presses = presses + excluded.presses;
END;
"""
# Version 4: the time index carries what a feedback page filters on, so a page
# deep into a month skips its offset inside the index; before, every skipped
# press cost a lookup in the table for its misuse flag and UTC offset. It
# also gives the full (occurred_at, terminal_id, seq) order pages are read in.
_SCHEMA_V4 = """
DROP INDEX press_time;
CREATE INDEX press_time ON press (occurred_at, terminal_id, seq, utc_offset_s, misuse, followup);
"""
# Version 5: how a web smiley's press came (qr, link, email, digital); empty for terminals.
_SCHEMA_V5 = """
ALTER TABLE press ADD COLUMN ui TEXT NOT NULL DEFAULT '';
"""
MIGRATIONS = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4, _SCHEMA_V5)
SCHEMA_VERSION = len(MIGRATIONS)
