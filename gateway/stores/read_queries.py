"""The SQL of the query side, written once for both stores with ``?`` placeholders.

Presses are counted from the ``press_hourly`` rollup (PostgreSQL; SQLite
once its store keeps one) when the window lies on hour boundaries, else from
``press``. Hour-precision counts (``hourly``) are added to either; they are
never misuse. Feedback rows come from ``press`` and, expanded into presses,
from ``hourly``, each read in time order by its own index-friendly query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.stores.reads import WIDEST_UTC_OFFSET_S, Dialect, Query, Selection, Window
from gateway.stores.schema import HOURLY, PRESS, PRESS_HOURLY, PRESS_HOURLY_SURVEY

LIMIT_MAX = 2**62  # LIMIT and OFFSET are bigint in both stores


def time_filter(
    d: Dialect, column: str, offset: str, window: Window | None
) -> tuple[str, list[Any]]:
    """SQL conditions (each starting with AND) for a stored time column within a window."""
    if window is None:
        return "", []
    if not window.local:
        return (
            f" AND {column} >= ? AND {column} < ?",
            [d.time_arg(window.start), d.time_arg(window.end)],
        )
    # Index-friendly bounds widened by the widest offset, then the exact local test.
    local = d.shifted(column, offset)
    return (
        f" AND {column} >= ? AND {column} < ? AND {local} >= ? AND {local} < ?",
        [
            d.time_arg(window.start - WIDEST_UTC_OFFSET_S),
            d.time_arg(window.end + WIDEST_UTC_OFFSET_S),
            d.time_arg(window.start),
            d.time_arg(window.end),
        ],
    )


# --- counts ---------------------------------------------------------------------


def _group(grain: str | None, local: str, offset: str, terminal: str) -> tuple[str, str]:
    """(select list, group by) for one grain, given the SQL of the row's local time."""
    if grain == "hour":
        start = f"({local} - ((({local}) % 3600) + 3600) % 3600)"
        return f"{start}, {offset}, 0", "1, 2"
    if grain == "day":
        start = f"({local} - ((({local}) % 86400) + 86400) % 86400)"
        return f"{start}, 0, 0", "1"
    return f"0, 0, {terminal}", "3"


def _rollup_exact(window: Window | None) -> bool:
    return window is None or window.local or (window.start % 3600 == 0 and window.end % 3600 == 0)


def count_queries(
    d: Dialect,
    terminals: Sequence[int],
    surveys: Sequence[int],
    window: Window | None,
    *,
    include_misuse: bool,
    grain: str | None,
    whole_survey: bool = False,
) -> list[Query]:
    """Queries of (local, offset, terminal_id, button, count) rows, to be added together."""
    queries: list[Query] = []
    if whole_survey and grain is not None and d.has_survey_rollup and _rollup_exact(window):
        # Every terminal of the survey: its own rollup, a row per hour whatever the fleet.
        survey_test, args = d.in_list("r.survey", surveys)
        times, more = time_filter(d, "r.hour", "r.utc_offset_s", window)
        args += more
        select, group = _group(grain, f"{d.epoch('r.hour')} + r.utc_offset_s", "r.utc_offset_s",
                               "0")  # fmt: skip
        misuse = "" if include_misuse else " AND NOT r.misuse"
        queries.append((
            f"SELECT {select}, r.button, sum(r.presses) FROM {PRESS_HOURLY_SURVEY} AS r"  # noqa: S608
            f" WHERE {survey_test}{times}{misuse} GROUP BY {group}, 4",
            args,
        ))  # fmt: skip
    elif d.has_rollup and _rollup_exact(window):
        where, args = d.in_list("r.terminal_id", terminals)
        survey_test, more = d.in_list("r.survey", surveys)
        args += more
        times, more = time_filter(d, "r.hour", "r.utc_offset_s", window)
        args += more
        select, group = _group(grain, f"{d.epoch('r.hour')} + r.utc_offset_s", "r.utc_offset_s",
                               "r.terminal_id")  # fmt: skip
        misuse = "" if include_misuse else " AND NOT r.misuse"
        queries.append((
            f"SELECT {select}, r.button, sum(r.presses) FROM {PRESS_HOURLY} AS r"  # noqa: S608
            f" WHERE {where} AND {survey_test}{times}{misuse} GROUP BY {group}, 4",
            args,
        ))  # fmt: skip
    else:
        where, args = d.in_list("p.terminal_id", terminals)
        times, more = time_filter(d, "p.occurred_at", "p.utc_offset_s", window)
        args += more
        select, group = _group(grain, f"{d.epoch('p.occurred_at')} + p.utc_offset_s",
                               "p.utc_offset_s", "p.terminal_id")  # fmt: skip
        misuse = "" if include_misuse else f" AND {d.not_misuse('p')}"
        queries.append((
            f"SELECT {select}, p.button, count(*) FROM {PRESS} AS p"  # noqa: S608
            f" WHERE {where}{times}{misuse} GROUP BY {group}, 4",
            args,
        ))  # fmt: skip
    if d.has_hourly:
        where, args = d.in_list("h.terminal_id", terminals)
        times, more = time_filter(d, "h.hour", "h.utc_offset_s", window)
        args += more
        select, group = _group(grain, f"{d.epoch('h.hour')} + h.utc_offset_s", "h.utc_offset_s",
                               "h.terminal_id")  # fmt: skip
        queries.append((
            f"SELECT {select}, h.button, sum(h.count) FROM {HOURLY} AS h"  # noqa: S608
            f" WHERE {where}{times} GROUP BY {group}, 4",
            args,
        ))  # fmt: skip
    return queries


def first_seen_query(d: Dialect, terminals: Sequence[int]) -> Query:
    """(terminal_id, earliest press, earliest hour count) rows, one index probe each."""
    values, argument = d.each_value(terminals)
    # min() of the bare column, so each probe is one index seek (terminal_id, occurred_at).
    probes = [
        d.epoch(f"(SELECT min(p.occurred_at) FROM {PRESS} AS p WHERE p.terminal_id = t.value)")  # noqa: S608
    ]
    if d.has_hourly:
        probes.append(d.epoch(f"(SELECT min(h.hour) FROM {HOURLY} AS h"  # noqa: S608
                              " WHERE h.terminal_id = t.value AND h.count > 0)"))  # fmt: skip
    return f"SELECT t.value, {', '.join(probes)} FROM {values}", [argument]  # noqa: S608


# --- feedback -------------------------------------------------------------------


def press_query(d: Dialect, s: Selection, limit: int | None, offset: int = 0) -> Query:
    """The selected presses, in time order: (occurred_at, terminal_id, seq, utc_offset_s,
    button, followup, misuse, precision, transport, clock_corrected) rows."""
    where, args = d.in_list("p.terminal_id", s.terminals)
    times, more = time_filter(d, "p.occurred_at", "p.utc_offset_s", s.window)
    args += more
    if not s.include_misuse:
        where += f" AND {d.not_misuse('p')}"
    if s.followups_only:
        where += " AND p.followup > 0"
    order = " DESC" if s.descending else ""
    by = f" ORDER BY p.occurred_at{order}, p.terminal_id{order}, p.seq{order}"
    columns = (
        f"p.occurred_at, p.terminal_id, p.seq, p.utc_offset_s, p.button, p.followup,"
        f" {d.misuse('p')}, p.precision, p.transport, p.clock_corrected"
    )
    selected = f" FROM {PRESS} AS p WHERE {where}{times}{by}"
    if limit is None and not offset:
        return f"SELECT {columns}{selected}", args
    args += [LIMIT_MAX if limit is None else min(limit, LIMIT_MAX), min(offset, LIMIT_MAX)]
    if d.name == "postgres":
        return f"SELECT {columns}{selected} LIMIT ? OFFSET ?", args
    # SQLite seeks a WITHOUT ROWID table row for every index entry it reads, even
    # one the WHERE or the OFFSET then discards. So a page takes its keys from
    # the time index alone (it holds every column filtered on) and only then
    # reads its own rows, which makes a page deep into a month ten times faster.
    keys = f"SELECT p.occurred_at, p.terminal_id, p.seq{selected} LIMIT ? OFFSET ?"
    return (
        f"SELECT {columns} FROM ({keys}) AS k CROSS JOIN {PRESS} AS p"  # noqa: S608
        f" ON p.terminal_id = k.terminal_id AND p.seq = k.seq{by}",
        args,
    )


def hour_query(d: Dialect, s: Selection, limit: int | None) -> Query:
    """The selected hour counts, one (hour, terminal_id, button, n, offset, transport) row
    for each of their presses (n = 1..count), in time order."""
    where, args = d.in_list("h.terminal_id", s.terminals)
    times, more = time_filter(d, "h.hour", "h.utc_offset_s", s.window)
    args += more
    order = " DESC" if s.descending else ""
    if d.name == "postgres":
        head, numbers = "", "CROSS JOIN LATERAL generate_series(1, h.count) AS n(i)"
    else:
        head = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"  # noqa: S608
            f" WHERE i < (SELECT coalesce(max(count), 0) FROM {HOURLY})) "
        )
        numbers = "JOIN n ON n.i <= h.count"
    sql = (
        f"{head}SELECT h.hour, h.terminal_id, h.button, n.i, h.utc_offset_s, h.transport"  # noqa: S608
        f" FROM {HOURLY} AS h {numbers} WHERE h.count > 0 AND {where}{times}"
        f" ORDER BY h.hour{order}, h.terminal_id{order}, h.button{order}, n.i{order}"
    )
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, args


def any_hours_query(d: Dialect, s: Selection) -> Query:
    """One row if the selection has any hour count."""
    where, args = d.in_list("h.terminal_id", s.terminals)
    times, more = time_filter(d, "h.hour", "h.utc_offset_s", s.window)
    return (
        f"SELECT 1 FROM {HOURLY} AS h WHERE h.count > 0 AND {where}{times} LIMIT 1",  # noqa: S608
        [*args, *more],
    )
