"""Counts per button, grouped by local hour, local day or terminal: what results are made of.

Presses are counted from the ``press_hourly`` rollup (PostgreSQL; SQLite
once its store keeps one) when the window lies on hour boundaries, else from
``press``. Hour-precision counts (``hourly``) are added to either; they are
never misuse. Misuse is left out unless asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.api.db import Dialect, Reader
from gateway.api.feedback import time_filter
from gateway.api.timeutil import Window

GRAINS = ("hour", "day", None)


@dataclass(frozen=True, slots=True)
class Count:
    """``count`` presses of ``button`` (1-based) in one group.

    ``local`` is the group's start in wall-clock seconds (hour or day grain),
    ``offset`` the UTC offset of an hour group; ``terminal_id`` for no grain.
    """

    local: int
    offset: int
    terminal_id: int
    button: int
    count: int


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
) -> list[tuple[str, list[Any]]]:
    queries = []
    if whole_survey and grain is not None and d.has_survey_rollup and _rollup_exact(window):
        # Every terminal of the survey: its own rollup, a row per hour whatever the fleet.
        survey_test, args = d.in_list("r.survey", surveys)
        times, more = time_filter(d, "r.hour", "r.utc_offset_s", window)
        args += more
        select, group = _group(grain, f"{d.epoch('r.hour')} + r.utc_offset_s", "r.utc_offset_s",
                               "0")  # fmt: skip
        misuse = "" if include_misuse else " AND NOT r.misuse"
        queries.append((
            f"SELECT {select}, r.button, sum(r.presses) FROM press_hourly_survey AS r"  # noqa: S608
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
            f"SELECT {select}, r.button, sum(r.presses) FROM press_hourly AS r"  # noqa: S608
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
            f"SELECT {select}, p.button, count(*) FROM press AS p"  # noqa: S608
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
            f"SELECT {select}, h.button, sum(h.count) FROM hourly AS h"  # noqa: S608
            f" WHERE {where}{times} GROUP BY {group}, 4",
            args,
        ))  # fmt: skip
    return queries


async def counts(
    db: Reader,
    terminals: Sequence[int],
    surveys: Sequence[int],
    window: Window | None,
    *,
    include_misuse: bool = False,
    grain: str | None = None,
    whole_survey: bool = False,
) -> list[Count]:
    """Every non-empty group's count per button.

    ``whole_survey``: ``terminals`` are every terminal of ``surveys``, so a
    per-survey rollup may answer instead of one per terminal.
    """
    if not terminals:
        return []
    found: list[Count] = []
    for sql, args in count_queries(
        db.dialect, terminals, surveys, window, include_misuse=include_misuse, grain=grain,
        whole_survey=whole_survey,
    ):  # fmt: skip
        found.extend(
            Count(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]))
            for r in await db.fetch(sql, args)
            if int(r[4]) > 0
        )
    return found


async def first_seen(db: Reader, terminals: Sequence[int]) -> dict[int, int]:
    """Each terminal's earliest press or hour count (Unix seconds), one index probe each."""
    if not terminals:
        return {}
    d = db.dialect
    values = "json_each(?) AS t" if d.name == "sqlite" else "unnest(?::bigint[]) AS t(value)"
    argument: Any = json.dumps(list(terminals)) if d.name == "sqlite" else list(terminals)
    # min() of the bare column, so each probe is one index seek (terminal_id, occurred_at).
    probes = [d.epoch("(SELECT min(p.occurred_at) FROM press AS p WHERE p.terminal_id = t.value)")]
    if d.has_hourly:
        probes.append(d.epoch("(SELECT min(h.hour) FROM hourly AS h"
                              " WHERE h.terminal_id = t.value AND h.count > 0)"))  # fmt: skip
    query = f"SELECT t.value, {', '.join(probes)} FROM {values}"  # noqa: S608 (no input in it)
    rows = await db.fetch(query, [argument])
    found = {}
    for row in rows:
        times = [int(v) for v in row[1:] if v is not None]
        if times:
            found[int(row[0])] = min(times)
    return found
