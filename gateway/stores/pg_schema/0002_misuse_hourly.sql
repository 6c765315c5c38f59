-- Version 2: misuse flags and hour-precision counts.

-- A press within its survey's misuse_interval_s after the last counted press
-- of its terminal. Kept by the writer (gateway/stores/pg_misuse.py) as the
-- greedy walk over the terminal's presses in time order, also when presses
-- arrive late; press_hourly.misuse follows it.
ALTER TABLE press ADD COLUMN misuse boolean NOT NULL DEFAULT false;
CREATE INDEX press_terminal_time ON press (terminal_id, occurred_at, seq);

-- Counts from HOURLY frames (SMS), to the hour: one row per terminal, UTC hour
-- and button. A batch with a higher batch_seq replaces the count of an hour it
-- covers; the same or an older batch changes nothing (spec, HOURLY).
CREATE TABLE hourly (
    terminal_id bigint NOT NULL,
    hour timestamptz NOT NULL,
    utc_offset_s integer NOT NULL,
    button smallint NOT NULL,
    count integer NOT NULL,
    batch_seq bigint NOT NULL,
    transport text NOT NULL,
    received_at_ms bigint NOT NULL,
    PRIMARY KEY (terminal_id, hour, button)
);
CREATE INDEX hourly_time ON hourly (hour);
