"""Time windows from the vendor's date parameters, and times in the vendor's formats.

A window is either *local* (dates: each press is compared by the wall-clock
time at its own experience point, so "2026-03-01" means that day wherever the
terminal stands) or *utc* (an instant with an explicit zone).
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from datetime import UTC, date, datetime, timedelta

from gateway.api.errors import BadParameter
from gateway.stores import reads

Window = reads.Window  # what the store's reader selects by
MAX_OFFSET_S = reads.WIDEST_UTC_OFFSET_S
DAY_S = 86400
PERIOD_PATTERN = (
    r"^(today|yesterday|this-week|last-week|this-month|last-month|this-year|last-year"
    r"|\d{4}(-(0[1-9]|1[0-2]|q[1-4]))?)$"
)
_PERIOD = re.compile(PERIOD_PATTERN, re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def day_seconds(d: date) -> int:
    return calendar.timegm(d.timetuple())


def today_utc() -> date:
    return datetime.now(UTC).date()


def parse_date(parameter: str, value: str) -> date:
    if not _DATE.fullmatch(value):
        raise BadParameter(parameter, f"expected a date YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadParameter(parameter, f"not a valid date: {value!r}") from None


def add_years(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


def _month_start(d: date, months: int = 0) -> date:
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period_dates(period: str, today: date) -> tuple[date, date]:
    """The [start, end) dates of a vendor period name; weeks start on Monday."""
    if not _PERIOD.fullmatch(period):
        raise BadParameter(
            "period",
            f"unknown period {period!r}; expected today, yesterday, this-week, last-week,"
            " this-month, last-month, this-year, last-year, YYYY, YYYY-MM or YYYY-qN",
        )
    monday = today - timedelta(days=today.weekday())
    named = {
        "today": (today, today + timedelta(days=1)),
        "yesterday": (today - timedelta(days=1), today),
        "this-week": (monday, monday + timedelta(days=7)),
        "last-week": (monday - timedelta(days=7), monday),
        "this-month": (_month_start(today), _month_start(today, 1)),
        "last-month": (_month_start(today, -1), _month_start(today)),
        "this-year": (date(today.year, 1, 1), date(today.year + 1, 1, 1)),
        "last-year": (date(today.year - 1, 1, 1), date(today.year, 1, 1)),
    }
    if period in named:
        return named[period]
    year = int(period[:4])
    if year < 1 or year > 9998:
        raise BadParameter("period", f"year out of range in {period!r}")
    if len(period) == 4:
        return date(year, 1, 1), date(year + 1, 1, 1)
    if period[5] == "q":
        first = date(year, 3 * (int(period[6]) - 1) + 1, 1)
        return first, _month_start(first, 3)
    first = date(year, int(period[5:7]), 1)
    return first, _month_start(first, 1)


def v2_window(
    period: str | None, start: str | None, end: str | None, today: date | None = None
) -> Window:
    """The vendor's v2 rules: dates beat period; start defaults to today, end to tomorrow."""
    today = today or today_utc()
    if start is None and end is None and period is not None:
        first, last = period_dates(period, today)
    else:
        if period is not None:
            period_dates(period, today)  # still reject a malformed one
        first = parse_date("startDate", start) if start is not None else today
        last = parse_date("endDate", end) if end is not None else today + timedelta(days=1)
    if last <= first:
        raise BadParameter("endDate", f"must be after startDate ({first.isoformat()})")
    if last > add_years(first, 1):
        raise BadParameter("endDate", "the interval from startDate to endDate is over one year")
    return Window(day_seconds(first), day_seconds(last), local=True)


_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)


def parse_instant(parameter: str, value: str) -> tuple[int, bool]:
    """A v1 date or time as (seconds, local): without a zone it is wall-clock time."""
    match = _INSTANT.fullmatch(value.strip())
    if not match:
        raise BadParameter(
            parameter, f"expected yyyy-MM-dd or yyyy-MM-ddTHH:mm:ss[.SSS][Z|±HHmm], got {value!r}"
        )
    year, month, day, hour, minute, second, _, zone = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:
        raise BadParameter(parameter, f"not a valid date or time: {value!r}") from None
    seconds = calendar.timegm(moment.timetuple())
    if zone is None:
        return seconds, True
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
        if offset > MAX_OFFSET_S:
            raise BadParameter(parameter, f"UTC offset out of range in {value!r}")
        seconds -= offset if zone[0] == "+" else -offset
    return seconds, False


def v1_window(date_start: str | None, date_end: str | None) -> Window | None:
    """date_start inclusive, date_end exclusive; None when neither is given (all time)."""
    if date_start is None and date_end is None:
        return None
    start, start_local = parse_instant("date_start", date_start) if date_start else (None, None)
    end, end_local = parse_instant("date_end", date_end) if date_end else (None, None)
    local = start_local if start_local is not None else bool(end_local)
    if start_local is not None and end_local is not None and start_local != end_local:
        # One local bound and one instant: read the local one as UTC (documented).
        local = False
    low = start if start is not None else -(2**40)
    high = end if end is not None else 2**40
    if high <= low:
        raise BadParameter("date_end", "must be after date_start")
    return Window(low, high, local)


@functools.lru_cache(maxsize=4096)
def _day(day: int) -> str:
    """``YYYY-MM-DD`` of a day number since 1970-01-01."""
    t = time.gmtime(day * DAY_S)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"


def _clock(seconds: int) -> tuple[str, int]:
    """(date, seconds into the day) of a wall-clock time in seconds."""
    day, rest = divmod(seconds, DAY_S)
    return _day(day), rest


@functools.lru_cache(maxsize=256)
def _zone(offset_s: int, colon: bool) -> str:
    sign = "-" if offset_s < 0 else "+"
    hours, rest = divmod(abs(offset_s), 3600)
    return f"{sign}{hours:02d}{':' if colon else ''}{rest // 60:02d}"


def _hms(rest: int) -> str:
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}"


def format_v1(seconds: int, offset_s: int, millis: int = 0) -> str:
    """``yyyy-MM-ddTHH:mm:ss.SSSZ``: the wall-clock time with ``±HHmm`` (``Z`` for UTC)."""
    day, rest = _clock(seconds + offset_s)
    zone = "Z" if offset_s == 0 else _zone(offset_s, False)
    return f"{day}T{_hms(rest)}.{millis:03d}{zone}"


def format_local(seconds: int, offset_s: int) -> str:
    """RFC 3339 wall-clock time with its offset, e.g. ``2026-03-01T14:00:00+02:00``."""
    day, rest = _clock(seconds + offset_s)
    return f"{day}T{_hms(rest)}{_zone(offset_s, True)}"


def format_utc(seconds: int) -> str:
    day, rest = _clock(seconds)
    return f"{day}T{_hms(rest)}Z"
