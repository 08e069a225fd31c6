"""Cron expressions and time zones: when a schedule fires, decided by APScheduler's own trigger.

`CronTrigger.get_next_fire_time(previous, now)` is pure, so these tests are the clock.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from campaign.inbox import waiting_sheets
from campaign.scheduler import RunResult, ScheduleError, cron_trigger, crontab_weekdays

pytestmark = pytest.mark.unit

NEW_YORK = ZoneInfo("America/New_York")


def fire_times(cron: str, tz: str, now: datetime, count: int) -> list[datetime]:
    trigger = cron_trigger(cron, tz)
    times: list[datetime] = []
    previous = None
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now if previous is None else previous)
        assert fire is not None
        times.append(fire)
        previous = fire
    return times


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("*", "*"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("5-7", "fri,sat,sun"),
        ("0-3", "mon,tue,wed,sun"),
        ("*/2", "tue,thu,sat,sun"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("sat,1", "mon,sat"),
    ],
)
def test_crontab_weekdays_count_from_sunday(field: str, names: str) -> None:
    # APScheduler 3 counts from Monday; a bare `1-5` would silently mean Tuesday-Saturday.
    assert crontab_weekdays(field, "x") == names


def test_weekday_evenings_fire_at_19_local_across_spring_forward() -> None:
    # US clocks go forward on Sunday 2026-03-08: EST (-5) before, EDT (-4) after.
    now = datetime(2026, 3, 5, 20, 0, tzinfo=NEW_YORK)  # Thursday evening, after 19:00
    times = fire_times("0 19 * * 1-5", "America/New_York", now, 3)
    assert [t.astimezone(UTC) for t in times] == [
        datetime(2026, 3, 7, 0, 0, tzinfo=UTC),  # Fri 19:00 EST
        datetime(2026, 3, 9, 23, 0, tzinfo=UTC),  # Mon 19:00 EDT: one hour earlier in UTC
        datetime(2026, 3, 10, 23, 0, tzinfo=UTC),
    ]
    assert all((t.hour, t.minute) == (19, 0) for t in (x.astimezone(NEW_YORK) for x in times))


def test_weekday_evenings_fire_at_19_local_across_fall_back() -> None:
    # US clocks go back on Sunday 2026-11-01.
    now = datetime(2026, 10, 30, 12, 0, tzinfo=NEW_YORK)
    times = fire_times("0 19 * * 1-5", "America/New_York", now, 2)
    assert [t.astimezone(UTC) for t in times] == [
        datetime(2026, 10, 30, 23, 0, tzinfo=UTC),  # Fri 19:00 EDT
        datetime(2026, 11, 3, 0, 0, tzinfo=UTC),  # Mon 19:00 EST
    ]


def test_europe_changes_on_its_own_date() -> None:
    # Europe moves its clocks on 2026-03-29, three weeks after the US.
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    times = fire_times("30 18 * * *", "Europe/Paris", now, 2)
    assert [t.astimezone(UTC) for t in times] == [
        datetime(2026, 3, 28, 17, 30, tzinfo=UTC),  # CET (+1)
        datetime(2026, 3, 29, 16, 30, tzinfo=UTC),  # CEST (+2)
    ]


def test_a_time_skipped_by_spring_forward_fires_once_an_hour_later() -> None:
    now = datetime(2026, 3, 7, 12, 0, tzinfo=NEW_YORK)
    times = fire_times("30 2 * * *", "America/New_York", now, 2)
    assert [t.astimezone(UTC) for t in times] == [
        datetime(2026, 3, 8, 7, 30, tzinfo=UTC),  # 02:30 does not exist: 03:30 EDT
        datetime(2026, 3, 9, 6, 30, tzinfo=UTC),
    ]


def test_a_time_repeated_by_fall_back_fires_in_both_hours() -> None:
    # Documented in docs/scheduling.md: avoid 01:00-01:59 in zones that fall back.
    now = datetime(2026, 10, 31, 12, 0, tzinfo=NEW_YORK)
    times = fire_times("30 1 * * *", "America/New_York", now, 3)
    assert [t.astimezone(UTC) for t in times] == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
        datetime(2026, 11, 2, 6, 30, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("cron", "tz", "message"),
    [
        ("0 19 * * 1-5", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("0 19 * * 1-5", "EST5EDT-x", "unknown time zone"),
        ("0 19 * *", "UTC", "expected 5 fields"),
        ("0 19 * * 1-5 2026", "UTC", "expected 5 fields"),
        ("61 19 * * *", "UTC", "invalid cron expression '61 19 * * *'"),
        ("0 25 * * *", "UTC", "invalid cron expression"),
        ("0 19 1 * 1", "UTC", "not both"),
        ("0 19 * * 8", "UTC", "'8' is not a day of the week"),
        ("0 19 * * 5-1", "UTC", "empty range"),
        ("0 19 * * */0", "UTC", "bad step"),
    ],
)
def test_bad_schedules_are_one_clear_line(cron: str, tz: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)) as err:
        cron_trigger(cron, tz)
    assert "\n" not in str(err.value)


def test_run_summary_is_one_line() -> None:
    result = RunResult(
        "nightly",
        "done",
        new_contacts=12,
        sheets_imported=1,
        inbox_imported=2,
        inbox_failed=1,
        dialer="14 attempts: 9 answered, 3 no_answer, 2 busy",
        workbook=Path("metrics_reports/nightly.xlsx"),
        seconds=312.4,
    )
    line = result.line()
    assert line == (
        "campaign nightly: done in 312s; 12 new contact(s) from 1 sheet(s), inbox 2 imported,"
        " 1 failed; dialer: 14 attempts: 9 answered, 3 no_answer, 2 busy;"
        " workbook metrics_reports/nightly.xlsx"
    )
    skipped = RunResult("nightly", "skipped", error="run 3 by h:1:x is still running")
    assert skipped.line() == "campaign nightly: skipped: run 3 by h:1:x is still running"


def test_inbox_leaves_hidden_temporary_and_fresh_files(tmp_path: Path) -> None:
    now = datetime(2026, 3, 9, 19, 0, tzinfo=UTC).timestamp()
    names = ["b.csv", "a.xlsx", ".hidden.csv", "~$lock.xlsx", "c.csv.part", "d.tmp", "fresh.csv"]
    for age, name in enumerate(names):
        path = tmp_path / name
        path.write_text("phone\n")
        mtime = now - 60 + age  # b.csv is the oldest
        if name == "fresh.csv":
            mtime = now - 2
        os.utime(path, (mtime, mtime))
    (tmp_path / "sub").mkdir()
    ready = waiting_sheets(tmp_path, min_age_seconds=10, now=now)
    assert [p.name for p in ready] == ["b.csv", "a.xlsx"]
    assert waiting_sheets(tmp_path / "missing", min_age_seconds=0) == []
