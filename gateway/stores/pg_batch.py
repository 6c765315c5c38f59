"""The statements that take a batch of presses in the PostgreSQL store (postgres.py's write).

The staging tables a connection keeps, and the one statement that moves a
batch from them into press, press_key and press_hourly; the misuse walk and
the survey rollup's flush that follow are in pg_misuse.py.
"""

from __future__ import annotations

from gateway.rows import PressRow

# The staging tables, one each per connection, emptied at every commit.
# press_stage: its columns up to received_at_ms are PressRow's, in PressRow's
# order, so a batch is copied as it is; ord keeps the batch order (the first
# copy of a key wins, as in the SQLite store). survey_delta: the transaction's
# changes to press_hourly_survey, applied at once by
# pg_misuse.FLUSH_SURVEY_DELTAS. Not created on a read-only standby, where
# nothing is written.
STAGE_COLUMNS = PressRow._fields
CREATE_STAGE = """
DO $$ BEGIN
IF NOT pg_is_in_recovery() THEN
    CREATE TEMP TABLE IF NOT EXISTS press_stage (
        terminal_id bigint NOT NULL,
        seq bigint NOT NULL,
        occurred_at bigint NOT NULL,
        utc_offset_s integer NOT NULL,
        button smallint NOT NULL,
        followup smallint NOT NULL,
        clock_corrected boolean NOT NULL,
        transport text NOT NULL,
        received_at_ms bigint NOT NULL,
        ui text NOT NULL DEFAULT '',
        precision text NOT NULL DEFAULT 'second',
        count integer NOT NULL DEFAULT 1,
        ord bigint GENERATED ALWAYS AS IDENTITY
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS survey_delta (
        survey bigint NOT NULL,
        hour timestamptz NOT NULL,
        utc_offset_s integer NOT NULL,
        button smallint NOT NULL,
        misuse boolean NOT NULL,
        presses bigint NOT NULL
    ) ON COMMIT DELETE ROWS;
END IF;
END $$
"""

# The idempotent insert from the staging table, in one statement:
# - firsts: one row per (terminal_id, seq) of the batch, its first copy;
# - claimed: the keys this transaction is the first ever to insert into
#   press_key. A key that is already there (an earlier batch, a retry after a
#   lost commit reply, a resend with a corrected clock, another gateway) claims
#   nothing. A key another transaction is inserting right now makes this one
#   wait for it and then claim nothing (or claim it, if the other rolled back).
#   Keys are claimed in (terminal_id, seq) order and rollup rows are updated in
#   key order, so two writers never wait for each other in a cycle (a writer
#   holds its terminals' row locks, so another waits before, not here, unless
#   the terminal is not in the registry);
# - only the claimed rows go into press (routed to their month's partition),
#   not misuse, and are added to press_hourly, with the terminal's survey and
#   location, and to survey_delta (flushed into press_hourly_survey last);
# - the statement returns the terminals whose new presses need the misuse walk
#   (pg_misuse.py), with the time of their first and last new press. Every
#   other terminal's new presses are rightly stored as counted: its survey has
#   no misuse interval, or no stored press is later than (or within the
#   interval before) its first new press and no two of its new presses are
#   closer than the interval, so the greedy walk counts each of them and
#   changes no earlier flag. That is the common case (a terminal's presses
#   arrive in order, seconds to minutes apart), and it costs no round trip.
#   The subquery on press reads the snapshot taken before this statement's own
#   inserts, so it sees exactly the presses stored before the batch.
# hour is the instant the local hour began: occurred_at less the seconds
# since the local hour began (a floor modulo, right for negative values too).
INSERT_FROM_STAGE = """
WITH firsts AS (
    SELECT DISTINCT ON (terminal_id, seq) *
    FROM press_stage
    ORDER BY terminal_id, seq, ord
), claimed AS (
    INSERT INTO press_key (terminal_id, seq, occurred_at)
    SELECT terminal_id, seq, to_timestamp(occurred_at) FROM firsts ORDER BY terminal_id, seq
    ON CONFLICT DO NOTHING
    RETURNING terminal_id, seq
), fresh AS (
    SELECT f.* FROM firsts AS f JOIN claimed AS c USING (terminal_id, seq)
), stored AS (
    INSERT INTO press (terminal_id, seq, occurred_at, utc_offset_s, precision, button,
                       followup, count, transport, clock_corrected, received_at_ms, ui)
    SELECT terminal_id, seq, to_timestamp(occurred_at), utc_offset_s, precision, button,
           followup, count, transport, clock_corrected, received_at_ms, ui
    FROM fresh
    RETURNING 1
), counted AS (
    SELECT coalesce(t.survey, -1) AS survey, coalesce(t.location, -1) AS location,
           f.terminal_id,
           to_timestamp(f.occurred_at - ((f.occurred_at + f.utc_offset_s) % 3600 + 3600) % 3600)
             AS hour,
           f.utc_offset_s, f.button, sum(f.count) AS presses
    FROM fresh AS f LEFT JOIN terminal AS t ON t.id = f.terminal_id
    GROUP BY 1, 2, 3, 4, 5, 6
), by_terminal AS (
    INSERT INTO press_hourly AS h
        (survey, location, terminal_id, hour, utc_offset_s, button, misuse, presses)
    SELECT survey, location, terminal_id, hour, utc_offset_s, button, false, presses
    FROM counted
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (survey, location, terminal_id, hour, utc_offset_s, button, misuse)
    DO UPDATE SET presses = h.presses + EXCLUDED.presses
    RETURNING 1
), by_survey AS (
    INSERT INTO survey_delta (survey, hour, utc_offset_s, button, misuse, presses)
    SELECT survey, hour, utc_offset_s, button, false, presses FROM counted
    RETURNING 1
), spans AS (
    SELECT terminal_id, min(occurred_at) AS first, max(occurred_at) AS last,
           min(gap) AS closest
    FROM (
        SELECT terminal_id, occurred_at,
               occurred_at - lag(occurred_at)
                 OVER (PARTITION BY terminal_id ORDER BY occurred_at, seq) AS gap
        FROM fresh
    ) AS g
    GROUP BY terminal_id
)
SELECT s.terminal_id, s.first, s.last
FROM spans AS s
JOIN terminal AS t ON t.id = s.terminal_id
JOIN survey AS v ON v.id = t.survey
WHERE v.misuse_interval_s > 0
  AND (s.closest < v.misuse_interval_s
       OR EXISTS (SELECT FROM press AS p WHERE p.terminal_id = s.terminal_id
                  AND p.occurred_at > to_timestamp(s.first - v.misuse_interval_s)))
"""
