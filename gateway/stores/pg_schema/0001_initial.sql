-- smiley-gateway central store, schema version 1.
--
-- Applied by gateway/stores/postgres.py in one transaction, under an advisory
-- lock, and recorded in schema_version. Never edit a released migration: add
-- the next numbered file instead.

-- The registry, as the SQLite store keeps it (gateway/stores/sqlite.py).
CREATE TABLE company (
    id text PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE location (
    id bigint PRIMARY KEY,
    company text NOT NULL,
    name text NOT NULL,
    parent bigint,
    timezone text            -- set on an experience point, where terminals stand
);
CREATE TABLE survey (
    id bigint PRIMARY KEY,
    company text NOT NULL,
    question text NOT NULL,
    locale text NOT NULL,
    scale text NOT NULL,
    misuse_interval_s integer NOT NULL
);
CREATE TABLE terminal (
    id bigint PRIMARY KEY,   -- 32-bit unsigned on the wire, so bigint here
    key bytea NOT NULL,
    location bigint NOT NULL,
    survey bigint NOT NULL,
    name text,
    phone text
);

-- Presses, partitioned by month of occurred_at (UTC) for years of data: old
-- months can be detached, archived or moved to cheaper storage one table at a
-- time, and a time-bounded query reads only the months it covers. Monthly
-- partitions are created by the writer, on demand, for the months a batch
-- touches; press_default is the safety net for a row whose month has none.
--
-- A unique constraint on a partitioned table must contain the partition key,
-- so the primary key here is (occurred_at, terminal_id, seq): it orders the
-- export and serves time-range scans, but it cannot deduplicate. A terminal
-- that resends a press after correcting its clock sends the same
-- (terminal_id, seq) with a different occurred_at, and both rows would fit.
-- Deduplication is therefore done by press_key below.
CREATE TABLE press (
    terminal_id bigint NOT NULL,
    seq bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    utc_offset_s integer NOT NULL,
    precision text NOT NULL DEFAULT 'second',
    button smallint NOT NULL,
    followup smallint NOT NULL,
    count integer NOT NULL DEFAULT 1,
    transport text NOT NULL,
    clock_corrected boolean NOT NULL,
    received_at_ms bigint NOT NULL,
    PRIMARY KEY (occurred_at, terminal_id, seq)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE press_default PARTITION OF press DEFAULT;

-- The idempotency key of a press, in a plain (not partitioned) table so that
-- its primary key is exactly (terminal_id, seq). A writer claims the keys of
-- a batch first (INSERT ... ON CONFLICT DO NOTHING RETURNING) and inserts into
-- press only the rows whose key it claimed, in the same transaction: a second
-- copy of a press, whatever its occurred_at, claims nothing and is dropped.
-- occurred_at here points at the one stored row.
CREATE TABLE press_key (
    terminal_id bigint NOT NULL,
    seq bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (terminal_id, seq)
);

-- Hourly results, kept current in the transaction that inserts new presses
-- (and only new ones, so a resend never counts twice). survey and location
-- are the terminal's at insert time; -1 when the terminal was not in this
-- store's registry then. hour is the instant the local wall-clock hour began
-- (local time = hour + utc_offset_s), which is the UTC hour for whole-hour
-- offsets and stays exact for zones with half- and quarter-hour offsets.
-- misuse is always false for now (misuse detection comes later); a result
-- "without misuse" filters on it, "with misuse" sums over both.
CREATE TABLE press_hourly (
    survey bigint NOT NULL,
    location bigint NOT NULL,
    terminal_id bigint NOT NULL,
    hour timestamptz NOT NULL,
    utc_offset_s integer NOT NULL,
    button smallint NOT NULL,
    misuse boolean NOT NULL,
    presses bigint NOT NULL,
    PRIMARY KEY (survey, location, terminal_id, hour, utc_offset_s, button, misuse)
);
CREATE INDEX press_hourly_survey_hour ON press_hourly (survey, hour);

-- The quarantine, keyed by the uid the forwarder gives each item
-- ("<gateway id>:<outbox id>"), so a resent reject is stored once.
CREATE TABLE rejected (
    uid text PRIMARY KEY,
    received_at_ms bigint NOT NULL,
    transport text NOT NULL,
    peer text NOT NULL,
    terminal_id bigint,
    seq bigint,
    reason text NOT NULL,
    detail text NOT NULL,
    raw bytea NOT NULL
);
CREATE INDEX rejected_time ON rejected (received_at_ms, uid);
