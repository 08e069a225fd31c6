"""Calling hours across time zones and DST, with a clock the test controls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from campaign.windows import CallingWindow, WindowError, parse_clock, parse_days

pytestmark = pytest.mark.unit

NY = ["America/New_York"]
LA = ["America/Los_Angeles"]


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_default_window_is_nine_to_eight_monday_to_saturday() -> None:
    window = CallingWindow()
    # Wednesday 2026-03-04, New York is UTC-5 in winter.
    assert not window.is_open(NY, utc(2026, 3, 4, 13, 59))  # 08:59 local
    assert window.is_open(NY, utc(2026, 3, 4, 14, 0))  # 09:00 local
    assert window.is_open(NY, utc(2026, 3, 5, 0, 59))  # 19:59 local
    assert not window.is_open(NY, utc(2026, 3, 5, 1, 0))  # 20:00 local: end is exclusive
    # Sunday 2026-03-08 at noon local is never open by default.
    assert not window.is_open(NY, utc(2026, 3, 8, 16, 0))


def test_same_instant_open_in_one_zone_closed_in_another() -> None:
    window = CallingWindow()
    instant = utc(2026, 3, 4, 14, 30)  # 09:30 New York, 06:30 Los Angeles
    assert window.is_open(NY, instant)
    assert not window.is_open(LA, instant)
    # A number spanning both zones needs both open.
    assert not window.is_open(NY + LA, instant)
    assert window.is_open(NY + LA, utc(2026, 3, 4, 17, 0))  # 12:00 / 09:00


def test_fallback_zone_applies_to_contacts_without_zones() -> None:
    window = CallingWindow(fallback_zone="Asia/Tokyo")
    instant = utc(2026, 3, 4, 1, 0)  # 10:00 in Tokyo
    assert window.is_open([], instant)
    assert window.is_open(None, instant)
    assert not CallingWindow().is_open([], instant)  # UTC 01:00


def test_dst_spring_forward_keeps_local_hours() -> None:
    window = CallingWindow()
    # New York springs forward on 2026-03-08 (Sunday); on Monday 03-09 it is UTC-4.
    assert window.is_open(NY, utc(2026, 3, 9, 13, 0))  # 09:00 EDT
    assert not window.is_open(NY, utc(2026, 3, 9, 12, 59))  # 08:59 EDT
    # The week before, 13:00 UTC was 08:00 EST: closed.
    assert not window.is_open(NY, utc(2026, 3, 2, 13, 0))


def test_dst_fall_back_keeps_local_hours() -> None:
    window = CallingWindow()
    # Europe/London falls back on 2026-10-25; on Monday 10-26 it is UTC+0.
    london = ["Europe/London"]
    assert window.is_open(london, utc(2026, 10, 26, 9, 0))
    assert not window.is_open(london, utc(2026, 10, 23, 7, 30))  # 08:30 BST on Friday


def test_next_open_across_zones_and_days() -> None:
    window = CallingWindow()
    saturday_night = utc(2026, 3, 8, 1, 30)  # Sat 20:30 New York: closed until Monday
    nxt = window.next_open(NY, saturday_night)
    assert nxt == utc(2026, 3, 9, 13, 0)  # Monday 09:00 EDT (after the DST change)
    assert window.is_open(NY, nxt)
    assert not window.is_open(NY, nxt - timedelta(minutes=1))
    # Both coasts: the later opening decides.
    both = window.next_open(NY + LA, utc(2026, 3, 4, 12, 0))
    assert both == utc(2026, 3, 4, 17, 0)


def test_next_open_is_now_when_open() -> None:
    instant = utc(2026, 3, 4, 15, 0)
    assert CallingWindow().next_open(NY, instant) == instant


def test_next_open_none_when_zones_never_overlap() -> None:
    window = CallingWindow(start=9 * 60, end=10 * 60)
    assert window.next_open(["Asia/Tokyo", "America/New_York"], utc(2026, 3, 4, 0, 0)) is None


def test_next_day_start_is_a_later_local_day() -> None:
    window = CallingWindow()
    tuesday_morning = utc(2026, 3, 3, 14, 0)  # Tue 09:00 New York
    assert window.next_day_start(NY, tuesday_morning) == utc(2026, 3, 4, 14, 0)
    saturday = utc(2026, 3, 7, 15, 0)  # Sat 10:00: the next day (Sunday) is closed
    assert window.next_day_start(NY, saturday) == utc(2026, 3, 9, 13, 0)


def test_legal_limits_need_an_explicit_override() -> None:
    with pytest.raises(WindowError, match="outside the legal 08:00-21:00"):
        CallingWindow(start=7 * 60, end=20 * 60)
    with pytest.raises(WindowError, match="outside the legal"):
        CallingWindow(start=9 * 60, end=22 * 60)
    all_day = CallingWindow(
        start=0, end=24 * 60, days=frozenset(range(7)), override_legal_limits=True
    )
    assert all_day.is_open(NY, utc(2026, 3, 8, 7, 0))  # Sunday 03:00 local


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(WindowError, match="before end"):
        CallingWindow(start=12 * 60, end=11 * 60)
    with pytest.raises(WindowError, match="unknown time zone"):
        CallingWindow(fallback_zone="Mars/Olympus")
    with pytest.raises(WindowError, match="not a time of day"):
        parse_clock("9am")
    with pytest.raises(WindowError, match="not a day"):
        parse_days(["mon", "funday"])
    with pytest.raises(ValueError, match="aware"):
        CallingWindow().is_open(NY, datetime(2026, 3, 4, 12, 0))


def test_parse_days_forms() -> None:
    assert parse_days("all") == frozenset(range(7))
    assert parse_days("weekdays") == frozenset(range(5))
    assert parse_days("mon-sat") == frozenset(range(6))
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_days(["Monday", "wed"]) == frozenset({0, 2})
    assert parse_clock("24:00", allow_midnight_end=True) == 24 * 60


def test_next_open_ever_looks_a_year_ahead_and_says_never() -> None:
    window = CallingWindow()
    june = utc(2026, 6, 3, 12, 0)
    # 09:00 in Tokyo is 20:00 in New York under daylight time: no common hour until
    # New York falls back in November (09:00 JST = 19:00 EST, on a Tuesday in Tokyo).
    assert window.next_open(["Asia/Tokyo", "America/New_York"], june) is None
    opens = window.next_open_ever(["Asia/Tokyo", "America/New_York"], june)
    assert opens == utc(2026, 11, 3, 0, 0)
    assert window.is_open(["Asia/Tokyo", "America/New_York"], opens)
    # Auckland and London are 11 to 13 hours apart: 09:00-20:00 never overlaps.
    assert window.next_open_ever(["Pacific/Auckland", "Europe/London"], june) is None
