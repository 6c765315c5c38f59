from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.timekeeping import UtcOffsets, format_local

ZONES = ["Europe/Helsinki", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]


@settings(max_examples=300)
@given(
    zone=st.sampled_from(ZONES),
    start=st.integers(min_value=946684800, max_value=2**32 - 1),
    steps=st.lists(st.integers(min_value=-4000, max_value=4000), max_size=20),
)
def test_offsets_and_format_equal_zoneinfo(zone: str, start: int, steps: list[int]) -> None:
    tz = ZoneInfo(zone)
    offsets = UtcOffsets(tz)
    moment = start
    for step in [0, *steps]:
        moment = max(0, moment + step)
        assert (
            format_local(moment, offsets(moment)) == datetime.fromtimestamp(moment, tz).isoformat()
        )


def test_across_a_dst_change() -> None:
    offsets = UtcOffsets(ZoneInfo("Europe/Helsinki"))
    change = 1774746000  # 2026-03-29T01:00:00Z: 03:00 EET becomes 04:00 EEST
    assert format_local(change - 1, offsets(change - 1)) == "2026-03-29T02:59:59+02:00"
    assert format_local(change, offsets(change)) == "2026-03-29T04:00:00+03:00"
    assert offsets(change - 1) == 7200


def test_offsets_west_of_utc_and_with_seconds() -> None:
    assert format_local(0, -5 * 3600) == "1969-12-31T19:00:00-05:00"
    assert format_local(0, -(44 * 60 + 30)) == "1969-12-31T23:15:30-00:44:30"
