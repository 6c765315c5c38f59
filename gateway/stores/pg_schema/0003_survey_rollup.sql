-- Version 3: hourly results per survey, for reports over long periods.
--
-- press_hourly has a row per terminal and hour, so a year of a chain's survey
-- is millions of rows; this table has a row per survey and hour (with the
-- UTC offset, button and misuse), about 70,000 for a year, whatever the number
-- of terminals. Kept in the same transactions as press_hourly
-- (gateway/stores/postgres.py and pg_misuse.py); backfilled here from it.
CREATE TABLE press_hourly_survey (
    survey bigint NOT NULL,
    hour timestamptz NOT NULL,
    utc_offset_s integer NOT NULL,
    button smallint NOT NULL,
    misuse boolean NOT NULL,
    presses bigint NOT NULL,
    PRIMARY KEY (survey, hour, utc_offset_s, button, misuse)
);
INSERT INTO press_hourly_survey (survey, hour, utc_offset_s, button, misuse, presses)
SELECT survey, hour, utc_offset_s, button, misuse, sum(presses)
FROM press_hourly
GROUP BY 1, 2, 3, 4, 5;
