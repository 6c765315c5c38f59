"""Misuse flags, hour counts and the shared rollup in the PostgreSQL store's write transaction.

The statements here run inside :meth:`PostgresStore.write`'s transaction, after
:data:`LOCK_TERMINALS`: the flags of a terminal depend on all its presses, so
the batches of one terminal take turns, while other terminals' batches go on
in parallel (the order of locks is in postgres.py's docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import asyncpg
import asyncpg.pool

from gateway.rows import HourCountRow
from gateway.stores.misuse import reflag

_Connection: TypeAlias = (
    "asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"
)

_WALK_LIMIT = 1000  # presses per terminal read at once; a walk usually settles in a few

# Each terminal of the batch with a misuse interval, and its last counted press
# before the earliest press of the batch, if that is within the interval: one
# counted earlier flags nothing (as none at all), and the bound lets the scan
# skip every older month's partition.
_STARTS = """
SELECT x.terminal_id, s.misuse_interval_s,
       (SELECT extract(epoch FROM p.occurred_at)::bigint FROM press AS p
        WHERE p.terminal_id = x.terminal_id AND p.occurred_at < to_timestamp(x.first)
          AND p.occurred_at >= to_timestamp(x.first - s.misuse_interval_s) AND NOT p.misuse
        ORDER BY p.occurred_at DESC, p.seq DESC LIMIT 1)
FROM unnest($1::bigint[], $2::bigint[]) AS x(terminal_id, first)
JOIN terminal AS t ON t.id = x.terminal_id
JOIN survey AS s ON s.id = t.survey
WHERE s.misuse_interval_s > 0
"""
_WALK = """
SELECT x.terminal_id, w.seq, w.at, w.misuse
FROM unnest($1::bigint[], $2::bigint[]) AS x(terminal_id, first)
CROSS JOIN LATERAL (
    SELECT seq, extract(epoch FROM occurred_at)::bigint AS at, misuse FROM press
    WHERE terminal_id = x.terminal_id AND occurred_at >= to_timestamp(x.first)
    ORDER BY occurred_at, seq OFFSET $3 LIMIT $4
) AS w
ORDER BY x.terminal_id, w.at, w.seq
"""
# Set the new flags and move their counts between the rollups' misuse rows (the
# survey rollup's through survey_delta).
_APPLY = """
WITH changed AS (
    UPDATE press AS p SET misuse = c.misuse
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::boolean[])
         AS c(terminal_id, seq, at, misuse)
    WHERE p.terminal_id = c.terminal_id AND p.seq = c.seq
      AND p.occurred_at = to_timestamp(c.at) AND p.misuse <> c.misuse
    RETURNING p.terminal_id, extract(epoch FROM p.occurred_at)::bigint AS at, p.utc_offset_s,
              p.button, p.count, p.misuse
), moves AS (
    SELECT coalesce(t.survey, -1) AS survey, coalesce(t.location, -1) AS location,
           c.terminal_id,
           to_timestamp(c.at - ((c.at + c.utc_offset_s) % 3600 + 3600) % 3600) AS hour,
           c.utc_offset_s, c.button, flag.misuse, sum(flag.delta) AS delta
    FROM changed AS c
    CROSS JOIN LATERAL (VALUES (c.misuse, c.count), (NOT c.misuse, -c.count))
         AS flag(misuse, delta)
    LEFT JOIN terminal AS t ON t.id = c.terminal_id
    GROUP BY 1, 2, 3, 4, 5, 6, 7
), by_terminal AS (
    INSERT INTO press_hourly AS h
        (survey, location, terminal_id, hour, utc_offset_s, button, misuse, presses)
    SELECT * FROM moves
    ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (survey, location, terminal_id, hour, utc_offset_s, button, misuse)
    DO UPDATE SET presses = h.presses + EXCLUDED.presses
    RETURNING 1
)
INSERT INTO survey_delta (survey, hour, utc_offset_s, button, misuse, presses)
SELECT survey, hour, utc_offset_s, button, misuse, delta FROM moves
"""
# The registry rows of the batch's terminals ($1, sorted), locked in id order.
# A terminal not in the registry has no row and needs none: it has no misuse
# interval, so nothing of it is walked, and its keys and rollup rows are
# claimed in key order within one statement.
LOCK_TERMINALS = """
SELECT FROM terminal WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE
"""
# The transaction's survey deltas (new presses, flags moved) into the rollup
# that writers of every terminal of a survey share: once, in key order, near
# the end of the transaction, so its rows are held from here to the commit.
# A key whose deltas sum to zero still gets its row, as adding them one by
# one would have made it.
FLUSH_SURVEY_DELTAS = """
INSERT INTO press_hourly_survey AS s (survey, hour, utc_offset_s, button, misuse, presses)
SELECT survey, hour, utc_offset_s, button, misuse, sum(presses)
FROM survey_delta
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (survey, hour, utc_offset_s, button, misuse)
DO UPDATE SET presses = s.presses + EXCLUDED.presses
"""
UPSERT_HOURS = """
INSERT INTO hourly AS h (terminal_id, hour, utc_offset_s, button, count, batch_seq, transport,
                         received_at_ms)
SELECT terminal_id, to_timestamp(hour), utc_offset_s, button, count, batch_seq, transport,
       received_at_ms
FROM unnest($1::bigint[], $2::bigint[], $3::integer[], $4::smallint[], $5::integer[],
            $6::bigint[], $7::text[], $8::bigint[])
     AS x(terminal_id, hour, utc_offset_s, button, count, batch_seq, transport, received_at_ms)
ORDER BY terminal_id, hour, button
ON CONFLICT (terminal_id, hour, button) DO UPDATE
SET count = EXCLUDED.count, batch_seq = EXCLUDED.batch_seq,
    utc_offset_s = EXCLUDED.utc_offset_s, received_at_ms = EXCLUDED.received_at_ms
WHERE EXCLUDED.batch_seq > h.batch_seq
"""


def hour_args(hours: Sequence[HourCountRow]) -> list[list[object]]:
    """The rows as one array per column, for UPSERT_HOURS."""
    return [list(column) for column in zip(*hours, strict=True)]


async def reflag_batch(conn: _Connection, spans: dict[int, tuple[int, int]]) -> None:
    """Bring the misuse flags up to date after the presses the batch inserted.

    ``spans`` maps each terminal to walk to the times of its first and last
    press new to the store: only those count, as a resend of an old press must
    not make the walk start at its old time.
    """
    ids = list(spans)
    firsts = [spans[t][0] for t in ids]
    starts = {r[0]: (r[1], r[2]) for r in await conn.fetch(_STARTS, ids, firsts)}
    walking = {t: starts[t][1] for t in ids if t in starts}  # terminal: last counted
    changes: list[tuple[int, int, int, bool]] = []
    offset = 0
    while walking:
        tids = list(walking)
        rows = await conn.fetch(_WALK, tids, [spans[t][0] for t in tids], offset, _WALK_LIMIT)
        by_terminal: dict[int, list[tuple[int, int, bool]]] = {t: [] for t in tids}
        for r in rows:
            by_terminal[r[0]].append((r[1], r[2], r[3]))
        for terminal_id, walked in by_terminal.items():
            walk = reflag(
                walked,
                last_counted=walking[terminal_id],
                interval_s=starts[terminal_id][0],
                settled_after=spans[terminal_id][1],
            )
            changes += [(terminal_id, seq, at, flag) for seq, at, flag in walk.changes]
            if walk.settled or len(walked) < _WALK_LIMIT:
                del walking[terminal_id]
            else:
                walking[terminal_id] = walk.last_counted
        offset += _WALK_LIMIT
    if changes:
        await conn.execute(_APPLY, *[list(column) for column in zip(*changes, strict=True)])
