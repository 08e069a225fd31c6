"""Nightly schedules on the real ledger: misfires, coalescing, restarts, overlap, the inbox.

The clock: APScheduler's scheduler and executor modules read the time only through
`datetime.now(tz)`; the `clock` fixture puts the test's clock in their place, and
`CampaignScheduler.tick()` runs one pass of APScheduler's own `_process_jobs`. So the
test sets the time and APScheduler's real code decides what fires, what is missed and
what coalesces. The runs themselves are real: the sheet is validated and imported, the
dialer engine runs (the campaign's `end_at` is in the past, so it dials no one and
needs no LiveKit server), and the workbook is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest
from alembic import command
from sqlalchemy import func, select

from campaign.runner import dial_campaign
from campaign.scheduler import CampaignScheduler, ScheduleError
from campaign.store import Contact, open_ledger
from campaign.store import schedules as schedule_store
from campaign.store.db import alembic_config
from campaign.store.models import CampaignRun

# The engine requires LiveKit credentials; these runs end before any request is sent.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("livekit_settings")]


NEW_YORK = ZoneInfo("America/New_York")

CAMPAIGN_YAML = """\
name: nightly
contacts: nightly.csv
region: US
trunk_id: ST_test
agent_name: test-agent
calling_hours: {start: "09:00", end: "20:00", days: all}
time_zone: America/New_York
# Over already: the engine runs for real and stops before its first dial.
end_at: 2020-01-01T00:00:00Z
"""

SHEET = """\
Name,Phone
Ada Lovelace,+1 212-736-0101
Grace Hopper,(212) 736-0111
"""


class Clock:
    """Stands in for `datetime` in APScheduler's modules: they only call `datetime.now(tz)`."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self, tz: object = None) -> datetime:
        assert tz is not None, "APScheduler asked for a naive time"
        return self.current.astimezone(tz)  # type: ignore[arg-type]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    controlled = Clock(datetime(2026, 3, 9, 18, 0, tzinfo=NEW_YORK))  # a Monday
    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", controlled)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", controlled)
    return controlled


@pytest.fixture
def campaigns_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (folder / "nightly.yaml").write_text(CAMPAIGN_YAML)
    (folder / "nightly.csv").write_text(SHEET)
    return folder


def make_service(url: str, campaigns_dir: Path, **options: float) -> CampaignScheduler:
    return CampaignScheduler(
        open_ledger(url),
        campaigns_dir=campaigns_dir,
        reports_dir=campaigns_dir.parent / "metrics_reports",
        dialer=dial_campaign,
        inbox_min_age_seconds=0,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def service(sqlite_ledger_url: str, campaigns_dir: Path) -> Iterator[CampaignScheduler]:
    scheduler = make_service(sqlite_ledger_url, campaigns_dir)
    yield scheduler
    scheduler.shutdown()


def runs(service: CampaignScheduler) -> list[CampaignRun]:
    return list(reversed(schedule_store.recent_runs(service.ledger, "nightly")))


def wait_for_runs(service: CampaignScheduler, count: int, timeout: float = 60) -> list[CampaignRun]:
    """Bounded wait until `count` runs are closed (jobs run on APScheduler's thread pool)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        closed = [r for r in runs(service) if r.finished_at is not None]
        if len(closed) >= count:
            return closed
        time.sleep(0.05)
    pytest.fail(f"expected {count} finished run(s), have {[r.status for r in runs(service)]}")


def test_down_at_19_and_back_at_1920_runs_once(service: CampaignScheduler, clock: Clock) -> None:
    service.start()
    view = service.add("nightly", "0 19 * * 1-5", "America/New_York")
    assert view.next_run == datetime(2026, 3, 9, 19, 0, tzinfo=NEW_YORK)

    clock.current = datetime(2026, 3, 9, 19, 20, tzinfo=NEW_YORK)  # back 20 minutes late
    service.tick()
    (run,) = wait_for_runs(service, 1)
    assert run.status == "done", run.summary
    assert run.trigger == "schedule"
    assert run.schedule_id == view.id
    assert run.summary is not None
    assert "2 new contact(s) from 1 sheet(s)" in run.summary
    assert list((service.reports_dir).glob("nightly-*.xlsx"))

    service.tick()  # nothing more is due
    time.sleep(0.5)
    assert len(runs(service)) == 1
    assert service.view(view.id).next_run == datetime(2026, 3, 10, 19, 0, tzinfo=NEW_YORK)


def test_back_next_morning_skips_the_missed_run_and_logs_it(
    service: CampaignScheduler, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    service.start()
    view = service.add("nightly", "0 19 * * 1-5", "America/New_York")
    clock.current = datetime(2026, 3, 10, 8, 0, tzinfo=NEW_YORK)  # Tuesday morning
    with caplog.at_level(logging.WARNING):
        service.tick()
        (run,) = wait_for_runs(service, 1)
    assert run.status == "missed"
    assert run.scheduled_for == datetime(2026, 3, 9, 23, 0, tzinfo=UTC)  # Monday 19:00 EDT
    assert "missed the run due at 2026-03-09 19:00 EDT" in caplog.text
    with service.ledger.session() as s:
        assert s.scalar(select(func.count()).select_from(Contact)) == 0  # nothing ran
    assert service.view(view.id).next_run == datetime(2026, 3, 10, 19, 0, tzinfo=NEW_YORK)


def test_several_missed_fire_times_coalesce_into_one_run(
    service: CampaignScheduler, clock: Clock
) -> None:
    service.start()
    service.add("nightly", "0 19 * * *", "America/New_York")
    # Down from Monday 18:00 to Thursday 19:05: four fire times passed, the last within grace.
    clock.current = datetime(2026, 3, 12, 19, 5, tzinfo=NEW_YORK)
    service.tick()
    (run,) = wait_for_runs(service, 1)
    assert run.status == "done", run.summary
    time.sleep(0.5)
    assert [r.status for r in runs(service)] == ["done"]


def test_restart_keeps_schedules(sqlite_ledger_url: str, campaigns_dir: Path, clock: Clock) -> None:
    first = make_service(sqlite_ledger_url, campaigns_dir)
    added = first.add("nightly", "30 19 * * 1-5", "America/New_York", timedelta(minutes=15))
    first.ledger.dispose()

    second = make_service(sqlite_ledger_url, campaigns_dir)
    try:
        (view,) = second.schedules()
        assert (view.id, view.campaign, view.cron, view.timezone) == (
            added.id,
            "nightly",
            "30 19 * * 1-5",
            "America/New_York",
        )
        assert view.misfire_grace == timedelta(minutes=15)
        assert view.next_run == datetime(2026, 3, 9, 19, 30, tzinfo=NEW_YORK)
        second.start()
        clock.current = datetime(2026, 3, 9, 19, 31, tzinfo=NEW_YORK)
        second.tick()
        (run,) = wait_for_runs(second, 1)
        assert run.status == "done", run.summary
    finally:
        second.shutdown()


def test_a_run_never_overlaps_another_run_of_the_campaign(
    service: CampaignScheduler, clock: Clock
) -> None:
    service.start()
    service.add("nightly", "0 19 * * *", "America/New_York")
    other = schedule_store.acquire_run(
        service.ledger, "nightly", owner="elsewhere", trigger="schedule", ttl=timedelta(minutes=2)
    )
    assert other is not None
    clock.current = datetime(2026, 3, 9, 19, 1, tzinfo=NEW_YORK)
    service.tick()
    skipped = wait_for_runs(service, 1)
    assert [r.status for r in skipped] == ["skipped"]
    assert skipped[0].summary is not None
    assert f"run {other.run_id} by elsewhere is still running" in skipped[0].summary
    with service.ledger.session() as s:
        assert s.scalar(select(func.count()).select_from(Contact)) == 0

    assert schedule_store.finish_run(service.ledger, other, "done", "finished elsewhere")
    result = service.run("nightly")  # `dialer schedule run-now`
    assert result.status == "done", result.line()


def test_a_campaign_that_cannot_run_fails_its_run_with_one_line(
    service: CampaignScheduler, campaigns_dir: Path
) -> None:
    (campaigns_dir / "nightly.yaml").write_text(CAMPAIGN_YAML.replace("region: US", "region: U"))
    result = service.run("nightly")
    assert result.status == "failed"
    assert result.error is not None
    assert "region" in result.error
    assert "\n" not in result.line()
    (run,) = runs(service)
    assert (run.status, run.summary) == ("failed", result.line())
    assert schedule_store.open_run(service.ledger, "nightly") is None  # the lock is released


def test_stop_before_dialing_records_an_interrupted_run(service: CampaignScheduler) -> None:
    service.stop.set()  # SIGTERM arrived: import, do not dial, still write the workbook
    result = service.run("nightly")
    assert result.status == "interrupted", result.line()
    assert result.dialer == ""
    assert result.new_contacts == 2
    assert result.workbook is not None
    assert result.workbook.exists()


def test_add_list_remove(service: CampaignScheduler, clock: Clock) -> None:
    a = service.add("nightly", "0  19 * * 1-5", "America/New_York")
    b = service.add("nightly", "0 10 * * sat", "Europe/London", timedelta(minutes=30))
    assert a.cron == "0 19 * * 1-5"
    assert [v.id for v in service.schedules()] == [a.id, b.id]
    assert service.view(b.id).next_run == datetime(
        2026, 3, 14, 10, 0, tzinfo=ZoneInfo("Europe/London")
    )
    service.remove(a.id)
    assert [v.id for v in service.schedules()] == [b.id]
    with pytest.raises(ScheduleError, match=f"no schedule with id {a.id}"):
        service.remove(a.id)
    with pytest.raises(ScheduleError, match="no such campaign file"):
        service.add("missing", "0 19 * * *", "UTC")
    with pytest.raises(ScheduleError, match="unknown time zone"):
        service.add("nightly", "0 19 * * *", "New York")
    assert len(service.schedules()) == 1  # failed adds leave nothing behind


def test_the_job_store_table_does_not_upset_alembic(
    any_ledger_url: str, campaigns_dir: Path
) -> None:
    service = make_service(any_ledger_url, campaigns_dir)
    service.add("nightly", "0 19 * * *", "UTC")
    command.check(alembic_config(any_ledger_url))  # raises when models and schema differ
