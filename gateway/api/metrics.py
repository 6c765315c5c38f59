"""Happy Index and result buckets (hour, day, week, month, quarter, year)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from fractions import Fraction
from math import floor
from zoneinfo import ZoneInfo

from gateway.api.timeutil import DAY_S, format_v1
from gateway.stores.reads import Count

TRUNCATES = ("hour", "day", "week", "month", "quarter", "year")


def happy_index(counts: Iterable[int]) -> int | None:
    """0..100: the mean response with the buttons weighted evenly from 0 to 100.

    Rounded half up; None without responses. 17/16/60/126 gives 78.
    """
    values = list(counts)
    total = sum(values)
    if total == 0 or len(values) < 2:
        return None
    score = Fraction(sum(i * c for i, c in enumerate(values)) * 100, total * (len(values) - 1))
    return floor(score + Fraction(1, 2))


def _bucket_day(day: date, truncate: str) -> date:
    if truncate == "week":
        return day - timedelta(days=day.weekday())
    if truncate == "month":
        return day.replace(day=1)
    if truncate == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    if truncate == "year":
        return date(day.year, 1, 1)
    return day


def buckets(
    rows: Iterable[Count], truncate: str, buttons: int, zone: ZoneInfo
) -> list[dict[str, object]]:
    """Rows of hour grain (truncate "hour") or day grain as v1 result buckets, oldest first.

    A bucket of a day or more starts at local midnight and carries the zone's
    offset then; an hour bucket carries the offset its presses were counted with.
    """
    found: dict[tuple[int, int], list[int]] = {}
    for row in rows:
        if not 1 <= row.button <= buttons:
            continue
        if truncate == "hour":
            key = (row.local - row.offset, row.offset)
        else:
            day = _bucket_day(date(1970, 1, 1) + timedelta(days=row.local // DAY_S), truncate)
            midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
            offset = midnight.utcoffset()
            seconds = int(offset.total_seconds()) if offset is not None else 0
            local = (day - date(1970, 1, 1)).days * DAY_S
            key = (local - seconds, seconds)
        found.setdefault(key, [0] * buttons)[row.button - 1] += row.count
    return [
        {"ts": format_v1(utc, offset), "data": data, "happyIndex": happy_index(data)}
        for (utc, offset), data in sorted(found.items())
    ]
