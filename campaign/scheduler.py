"""Nightly campaigns: APScheduler 3 cron jobs kept in the ledger's database.

A schedule is a row in `schedules` (campaign, crontab, IANA zone, misfire grace) plus an
APScheduler job in `apscheduler_jobs` on the same database, so schedules survive
restarts. When a job fires, the run:

1. takes the campaign's run lock (a lease row in `campaign_runs`; see
   `campaign.store.schedules`), so one campaign never runs twice at once, also across
   several scheduler processes on one PostgreSQL ledger;
2. imports what is new: the campaign's sheets (new numbers only; the import is
   idempotent) and every sheet dropped into `campaigns/<name>/inbox/`;
3. runs the dialer until nothing more is dialable tonight (it honours the calling hours);
4. writes the workbook and logs a one-line summary.

Misfires, on purpose: jobs coalesce (a scheduler that was down across several fire
times runs once, not once per missed time), and a fire time more than the schedule's
misfire grace (one hour by default) in the past is skipped and logged, not run late.
So a scheduler down at 19:00 and back at 19:20 runs once; one back the next morning
skips the missed run, logs it and records it as `missed`.

Runs started from the desk (`dialer serve`) take the same path: `serve_requests` takes a
start request from the ledger (one replica per request), and the run holds the same lock;
a campaign made on the desk has no file, so its settings come from its ledger row and its
contacts are already imported.

Stopping: SIGTERM or SIGINT stops the scheduler from firing anything new; runs in
flight stop claiming contacts, their calls finish and are recorded, then the process
exits 0. See `docs/scheduling.md`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from pydantic import ValidationError

from campaign.campaign_file import (
    CampaignConfig,
    CampaignFileError,
    check_campaign_name,
    load_campaign,
)
from campaign.config import Settings
from campaign.contacts import validate_sheet
from campaign.errors import UserError, validation_problems
from campaign.inbox import DEFAULT_MIN_AGE_SECONDS, InboxPaths, pick_up
from campaign.report import default_report_path, write_report
from campaign.runner import dial_campaign
from campaign.store import Ledger, open_ledger
from campaign.store import desk as desk_store
from campaign.store import schedules as schedule_store
from campaign.store.db import LEDGER_FAULTS
from campaign.store.imports import import_contacts
from campaign.store.models import CampaignRun

logger = logging.getLogger(__name__)
# APScheduler narrates starting and stopping the paused scheduler that `dialer schedule`
# uses only to reach the job store; our own log line says what changed.
_admin_log = logging.getLogger(f"{__name__}.jobstore")
_admin_log.setLevel(logging.WARNING)

#: A fire time later than this is skipped (and logged) rather than run late.
DEFAULT_MISFIRE_GRACE = timedelta(hours=1)
#: The longest the scheduler sleeps, so schedules added by `dialer schedule add` in
#: another process are seen without a restart.
DEFAULT_POLL_SECONDS = 30.0
#: A run lock not renewed for this long belongs to a dead process and may be taken over.
DEFAULT_LEASE_TTL = timedelta(minutes=2)
DEFAULT_HEARTBEAT_SECONDS = 20.0
#: Campaigns of different names may run side by side, at most this many at once.
DEFAULT_MAX_PARALLEL_RUNS = 4
#: How often an idle runner looks for a start pressed on the desk.
DEFAULT_REQUEST_POLL_SECONDS = 2.0

#: the longest crontab the ledger keeps
MAX_CRON = 100
_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering


class ScheduleError(UserError, ValueError):
    """A schedule cannot be added, found or run; the message is one line saying why."""


#: Failures whose message says it all: logged as one line, without a traceback.


class CampaignDialer(Protocol):
    """Run a campaign until nothing more is dialable in this run, or until `stop` is set.

    On `stop` the dialer claims nothing more, lets the calls in flight finish and
    records them, then returns. It returns a one-line summary of what it did.
    """

    def __call__(self, config: CampaignConfig, ledger: Ledger, stop: threading.Event) -> str: ...


# --- cron ------------------------------------------------------------------------------


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as America/New_York"
        ) from None


def _weekday(token: str, cron: str) -> int:
    word = token.strip().lower()
    if word[:3] in _WEEKDAY_NAMES and len(word) >= 3:
        return _WEEKDAY_NAMES.index(word[:3])
    if word.isdigit() and 0 <= int(word) <= 7:
        return int(word) % 7
    raise ScheduleError(f"invalid cron expression {cron!r}: {token!r} is not a day of the week")


def crontab_weekdays(field_text: str, cron: str) -> str:
    """The crontab weekday field (0 or 7 = Sunday) as APScheduler day names.

    APScheduler 3 numbers weekdays from Monday = 0, so `1-5` passed through unchanged
    would mean Tuesday to Saturday. Expanding to names removes the ambiguity.
    """
    if field_text == "*":
        return "*"
    days: set[int] = set()
    for part in field_text.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"invalid cron expression {cron!r}: bad step in {part!r}")
            step = int(step_text)
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            start_text, _, end_text = span.partition("-")
            first, last = _weekday(start_text, cron), _weekday(end_text, cron)
            if end_text.strip() == "7":
                last = 7  # `5-7` is Friday to Sunday
            if last < first:
                raise ScheduleError(f"invalid cron expression {cron!r}: empty range {span!r}")
        else:
            first = last = _weekday(span, cron)
        days.update(day % 7 for day in range(first, last + 1, step))
    monday_first = sorted(days, key=lambda day: (day - 1) % 7)
    return ",".join(_WEEKDAY_NAMES[day] for day in monday_first)


def cron_trigger(cron: str, timezone: str) -> CronTrigger:
    """A trigger from a five-field crontab (`minute hour day month weekday`) in an IANA zone."""
    zone = parse_zone(timezone)
    if len(" ".join(cron.split())) > MAX_CRON:
        raise ScheduleError(f"invalid cron expression: more than {MAX_CRON} characters")
    fields = cron.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"invalid cron expression {cron!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week), got "
            f"{len(fields)}"
        )
    minute, hour, day, month, weekday = fields
    if day != "*" and weekday != "*":
        # Vixie cron runs when either matches, APScheduler only when both do: refuse
        # rather than pick one meaning silently.
        raise ScheduleError(
            f"invalid cron expression {cron!r}: give a day of the month or a day of the "
            "week, not both"
        )
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_weekdays(weekday, cron),
            timezone=zone,
        )
    except ValueError as exc:
        raise ScheduleError(f"invalid cron expression {cron!r}: {exc}") from None


# --- results ---------------------------------------------------------------------------


@dataclass
class RunResult:
    """What one run did, and the one line logged and stored for it."""

    campaign: str
    status: str  # done | interrupted | failed | skipped | lost
    new_contacts: int = 0
    sheets_imported: int = 0
    sheet_errors: list[str] = field(default_factory=list)
    inbox_imported: int = 0
    inbox_failed: int = 0
    dialer: str = ""
    workbook: Path | None = None
    seconds: float = 0.0
    error: str | None = None

    def line(self) -> str:
        if self.status == "skipped":
            return f"campaign {self.campaign}: skipped: {self.error}"
        parts = [f"campaign {self.campaign}: {self.status} in {self.seconds:.0f}s"]
        if self.error:
            parts.append(self.error)
        imported = f"{self.new_contacts} new contact(s) from {self.sheets_imported} sheet(s)"
        imported += f", inbox {self.inbox_imported} imported"
        if self.inbox_failed:
            imported += f", {self.inbox_failed} failed"
        if self.sheet_errors:
            imported += f", {len(self.sheet_errors)} sheet(s) unreadable"
        parts.append(imported)
        if self.dialer:
            parts.append(f"dialer: {self.dialer}")
        if self.workbook is not None:
            parts.append(f"workbook {self.workbook}")
        return "; ".join(parts)


@dataclass(frozen=True)
class ScheduleView:
    """A schedule as `dialer schedule list` shows it."""

    id: int
    campaign: str
    cron: str
    timezone: str
    misfire_grace: timedelta
    created_at: datetime
    next_run: datetime | None  # in the schedule's zone; None when its job is missing
    last_run: CampaignRun | None


def owner_id() -> str:
    """Who holds a run lock: host, process, and a nonce against pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def job_id(schedule_id: int) -> str:
    return f"schedule-{schedule_id}"


# --- APScheduler -----------------------------------------------------------------------


class _Scheduler(BaseScheduler):  # type: ignore[misc]
    """APScheduler's base with our own loop: `tick()` is one pass over the due jobs.

    The loop never sleeps longer than `poll_seconds`, so jobs added by another process
    are noticed; the tests drive `tick()` directly under a clock they control.
    """

    def __init__(self, *, poll_seconds: float, **options: Any) -> None:
        self._wake = threading.Event()
        self._poll_seconds = poll_seconds
        super().__init__(**options)

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        self._wake.set()

    def wakeup(self) -> None:
        self._wake.set()

    def tick(self) -> float:
        """Submit what is due now; return how long to sleep before the next tick."""
        wait = self._process_jobs()
        return self._poll_seconds if wait is None else min(wait, self._poll_seconds)

    def run_until(self, stop: threading.Event) -> None:
        while not stop.is_set():
            delay = self.tick()
            self._wake.wait(delay)
            self._wake.clear()


# --- the service -----------------------------------------------------------------------


class _LeaseGuard:
    """Renews a run lock while the run lasts and turns stop requests into the run's stop."""

    def __init__(
        self,
        ledger: Ledger,
        lease: schedule_store.Lease,
        *,
        ttl: timedelta,
        heartbeat_seconds: float,
        outer_stop: threading.Event,
    ) -> None:
        self.ledger = ledger
        self.lease = lease
        self.lost = False
        self.run_stop = threading.Event()
        self._ttl = ttl
        self._heartbeat = heartbeat_seconds
        self._outer_stop = outer_stop
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"lease-{lease.campaign}", daemon=True
        )

    def __enter__(self) -> _LeaseGuard:
        if self._outer_stop.is_set():
            self.run_stop.set()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        last_renewal = time.monotonic()
        while not self._done.wait(0.2):
            if self._outer_stop.is_set() and not self.run_stop.is_set():
                logger.info("campaign %s: stopping; calls in flight finish", self.lease.campaign)
                self.run_stop.set()
            if time.monotonic() - last_renewal < self._heartbeat:
                continue
            try:
                renewed = schedule_store.renew_run(self.ledger, self.lease, self._ttl)
            except Exception as exc:  # the ledger blinked: retry next beat, the lease has slack
                logger.warning(
                    "campaign %s: cannot renew the run lock: %s", self.lease.campaign, exc
                )
                continue
            last_renewal = time.monotonic()
            if renewed is None:
                logger.error(
                    "campaign %s: the run lock was taken over by another scheduler; stopping",
                    self.lease.campaign,
                )
                self.lost = True
                self.run_stop.set()
                return
            self.lease = renewed


#: The service that APScheduler's jobs (stored by reference to `fire`) run in.
_current: CampaignScheduler | None = None
_current_lock = threading.Lock()


def fire(schedule_id: int, campaign: str) -> None:
    """The job function stored in `apscheduler_jobs` (by this name: keep it)."""
    service = _current
    if service is None:
        logger.error(
            "schedule %s (campaign %s) fired with no scheduler running", schedule_id, campaign
        )
        return
    service.run(campaign, trigger="schedule", schedule_id=schedule_id)


class CampaignScheduler:
    """Adds, lists and removes schedules, runs campaigns, and serves as `dialer scheduler`."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        campaigns_dir: Path,
        reports_dir: Path,
        dialer: CampaignDialer,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        lease_ttl: timedelta = DEFAULT_LEASE_TTL,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        inbox_min_age_seconds: float = DEFAULT_MIN_AGE_SECONDS,
        max_parallel_runs: int = DEFAULT_MAX_PARALLEL_RUNS,
        request_poll_seconds: float = DEFAULT_REQUEST_POLL_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.campaigns_dir = campaigns_dir.resolve()
        self.reports_dir = reports_dir
        self.dialer = dialer
        self.owner = owner_id()
        #: set by SIGTERM/SIGINT (or `request_stop`): fire nothing new, drain runs in flight
        self.stop = threading.Event()
        self._poll_seconds = poll_seconds
        self._lease_ttl = lease_ttl
        self._heartbeat_seconds = heartbeat_seconds
        self._inbox_min_age = inbox_min_age_seconds
        self._max_parallel = max_parallel_runs
        self._request_poll_seconds = request_poll_seconds
        self._scheduler: _Scheduler | None = None

    # -- APScheduler plumbing

    def _new_scheduler(self, logger: logging.Logger | None = None) -> _Scheduler:
        return _Scheduler(
            poll_seconds=self._poll_seconds,
            logger=logger or logging.getLogger("apscheduler.scheduler"),
            timezone=UTC,
            jobstores={"default": SQLAlchemyJobStore(engine=self.ledger.engine)},
            executors={"default": ThreadPoolExecutor(self._max_parallel)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(DEFAULT_MISFIRE_GRACE.total_seconds()),
            },
        )

    @contextmanager
    def _jobs(self) -> Iterator[_Scheduler]:
        """The running scheduler, or a paused one just to read and write the job schedules."""
        if self._scheduler is not None:
            yield self._scheduler
            return
        scheduler = self._new_scheduler(_admin_log)
        scheduler.start(paused=True)
        try:
            yield scheduler
        finally:
            scheduler.shutdown(wait=False)

    def start(self) -> None:
        """Start firing due jobs (call `tick()` or `serve()` to process them)."""
        global _current
        with _current_lock:
            if _current is not None:
                raise ScheduleError("a campaign scheduler is already running in this process")
            scheduler = self._new_scheduler()
            scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
            scheduler.start()
            self._scheduler = scheduler
            _current = self

    def tick(self) -> float:
        """Fire what is due now; return seconds until the next tick is needed."""
        if self._scheduler is None:
            raise ScheduleError("the scheduler is not started")
        return self._scheduler.tick()

    def shutdown(self) -> None:
        """Fire nothing new; let runs in flight drain (their calls finish and are recorded)."""
        global _current
        self.stop.set()
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        with _current_lock:
            if _current is self:
                _current = None

    def request_stop(self) -> None:
        self.stop.set()
        if self._scheduler is not None:
            self._scheduler.wakeup()

    def serve(self, *, install_signal_handlers: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or `request_stop`), then drain and return."""
        if install_signal_handlers:
            self._install_signal_handlers()
        self.start()
        assert self._scheduler is not None
        views = self.schedules()
        logger.info(
            "scheduler %s: %d schedule(s) on %s", self.owner, len(views), self.ledger.safe_url
        )
        for view in views:
            logger.info(
                "schedule %s: campaign %s, cron %r %s, next run %s",
                view.id,
                view.campaign,
                view.cron,
                view.timezone,
                view.next_run,
            )
        desk = threading.Thread(target=self.serve_requests, name="desk-requests", daemon=True)
        desk.start()
        try:
            self._scheduler.run_until(self.stop)
        finally:
            logger.info("scheduler %s: stopping; waiting for runs in flight", self.owner)
            desk.join()
            self.shutdown()
            logger.info("scheduler %s: stopped", self.owner)

    # -- runs started from the desk

    def serve_requests(self) -> None:
        """Take the desk's start requests (any replica may; one takes each) until stopped.

        At most `max_parallel_runs` runs at once, with the scheduled ones' threads apart;
        a request is taken only when a slot is free, so a busy replica leaves it to another.
        """
        slots = threading.BoundedSemaphore(self._max_parallel)
        runs: list[threading.Thread] = []
        while not self.stop.is_set():
            if not slots.acquire(timeout=self._request_poll_seconds):
                continue
            try:
                request = desk_store.take_request(self.ledger, self.owner)
            except Exception as exc:  # the ledger blinked: look again next poll
                logger.warning("cannot read the desk's start requests: %s", exc)
                request = None
            if request is None:
                slots.release()
                self.stop.wait(self._request_poll_seconds)
                continue

            def run_request(request: desk_store.RequestView = request) -> None:
                try:
                    self.run_request(request)
                finally:
                    slots.release()

            thread = threading.Thread(target=run_request, name=f"desk-run-{request.id}")
            thread.start()
            runs.append(thread)
            runs = [t for t in runs if t.is_alive()]
        for thread in runs:
            thread.join()

    def run_request(self, request: desk_store.RequestView) -> RunResult:
        """One desk-started run; the request is closed with the run's result line."""
        logger.info(
            "campaign %s: start requested by %s (request %s)",
            request.campaign,
            request.requested_by,
            request.id,
        )
        result = RunResult(request.campaign, "failed")
        try:
            result = self.run(request.campaign, trigger="desk")
        finally:
            status = result.status if result.status in desk_store.FINISHED_REQUESTS else "failed"
            desk_store.finish_request(self.ledger, request.id, status, result.line())
        return result

    def run_now(self, campaign: str) -> RunResult:
        """`dialer schedule run-now`: one run in the foreground; SIGTERM/SIGINT drain it."""
        self._install_signal_handlers()
        return self.run(campaign, trigger="manual")

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        self.request_stop()

    def _on_missed(self, event: JobExecutionEvent) -> None:
        schedule_id = int(str(event.job_id).removeprefix("schedule-"))
        row = schedule_store.get_schedule(self.ledger, schedule_id)
        campaign = row.campaign if row else "?"
        zone = parse_zone(row.timezone) if row else UTC
        due = event.scheduled_run_time.astimezone(zone)
        grace = row.misfire_grace_seconds if row else 0
        summary = (
            f"missed the run due at {due:%Y-%m-%d %H:%M %Z}: more than {grace // 60} min late "
            "(the scheduler was not running); skipped"
        )
        logger.warning("schedule %s (campaign %s): %s", schedule_id, campaign, summary)
        schedule_store.record_run(
            self.ledger,
            campaign,
            owner=self.owner,
            trigger="schedule",
            status="missed",
            summary=summary,
            schedule_id=schedule_id,
            scheduled_for=event.scheduled_run_time.astimezone(UTC),
        )

    # -- schedules

    def add(
        self,
        campaign: str,
        cron: str,
        timezone: str,
        misfire_grace: timedelta = DEFAULT_MISFIRE_GRACE,
    ) -> ScheduleView:
        trigger = cron_trigger(cron, timezone)
        if misfire_grace <= timedelta(0):
            raise ScheduleError("the misfire grace must be positive")
        self.load(campaign)  # refuse a schedule for a campaign that cannot run
        cron = " ".join(cron.split())
        row = schedule_store.add_schedule(
            self.ledger, campaign, cron, timezone, int(misfire_grace.total_seconds())
        )
        try:
            with self._jobs() as scheduler:
                scheduler.add_job(
                    fire,
                    trigger=trigger,
                    id=job_id(row.id),
                    name=f"{campaign} [{cron} {timezone}]",
                    kwargs={"schedule_id": row.id, "campaign": campaign},
                    misfire_grace_time=row.misfire_grace_seconds,
                    coalesce=True,
                    max_instances=1,
                )
        except BaseException:
            schedule_store.delete_schedule(self.ledger, row.id)
            raise
        logger.info("schedule %s added: campaign %s, cron %r %s", row.id, campaign, cron, timezone)
        return self.view(row.id)

    def remove(self, schedule_id: int) -> None:
        if schedule_store.get_schedule(self.ledger, schedule_id) is None:
            raise ScheduleError(f"no schedule with id {schedule_id}")
        # Already gone from the job store is fine: the row goes next.
        with self._jobs() as scheduler, suppress(JobLookupError):
            scheduler.remove_job(job_id(schedule_id))
        schedule_store.delete_schedule(self.ledger, schedule_id)
        logger.info("schedule %s removed", schedule_id)

    def view(self, schedule_id: int) -> ScheduleView:
        for view in self.schedules():
            if view.id == schedule_id:
                return view
        raise ScheduleError(f"no schedule with id {schedule_id}")

    def schedules(self, campaign: str | None = None) -> list[ScheduleView]:
        rows = schedule_store.list_schedules(self.ledger, campaign)
        with self._jobs() as scheduler:
            jobs = {job.id: job for job in scheduler.get_jobs()}
        last: dict[int, CampaignRun] = {}
        for run in schedule_store.recent_runs(self.ledger, limit=500):
            if run.schedule_id is not None:
                last.setdefault(run.schedule_id, run)
        views = []
        for row in rows:
            job = jobs.get(job_id(row.id))
            next_run = job.next_run_time if job is not None else None
            views.append(
                ScheduleView(
                    id=row.id,
                    campaign=row.campaign,
                    cron=row.cron,
                    timezone=row.timezone,
                    misfire_grace=timedelta(seconds=row.misfire_grace_seconds),
                    created_at=row.created_at,
                    next_run=next_run.astimezone(parse_zone(row.timezone)) if next_run else None,
                    last_run=last.get(row.id),
                )
            )
        return views

    # -- runs

    def load(self, campaign: str) -> CampaignConfig:
        return self._source(campaign)[0]

    def _source(self, campaign: str) -> tuple[CampaignConfig, bool]:
        """The campaign's settings and whether they come from a file (else the ledger).

        A campaign made on the desk has no file: its settings are on its ledger row and
        its contacts are already in the ledger, so every replica can run it.
        """
        try:
            path = self.campaigns_dir / f"{check_campaign_name(campaign)}.yaml"
        except CampaignFileError as exc:
            raise ScheduleError(str(exc)) from None
        if not path.exists():
            stored = desk_store.stored_config(self.ledger, campaign)
            if stored:
                try:
                    return CampaignConfig.model_validate(stored), False
                except ValidationError as exc:
                    _, first = validation_problems(exc)[0]
                    raise ScheduleError(
                        f"campaign {campaign}: its stored settings do not validate ({first})"
                    ) from None
        try:
            config = load_campaign(path)
        except CampaignFileError as exc:
            raise ScheduleError(str(exc)) from None
        if config.name != campaign:
            # The file name finds the campaign, its inbox and its lock; the name keys the
            # ledger. Two names for one campaign would split them.
            raise ScheduleError(
                f"{path}: names its campaign {config.name!r}; rename the file or the campaign "
                "so that they match"
            )
        return config, True

    def run(
        self, campaign: str, *, trigger: str = "manual", schedule_id: int | None = None
    ) -> RunResult:
        """One run of the campaign under its run lock; `self.stop` drains it."""
        started = time.monotonic()
        lease = schedule_store.acquire_run(
            self.ledger,
            campaign,
            owner=self.owner,
            trigger=trigger,
            ttl=self._lease_ttl,
            schedule_id=schedule_id,
        )
        if lease is None:
            holder = schedule_store.open_run(self.ledger, campaign)
            held_by = f"run {holder.id} by {holder.owner}" if holder else "another run"
            result = RunResult(campaign, "skipped", error=f"{held_by} is still running")
            schedule_store.record_run(
                self.ledger,
                campaign,
                owner=self.owner,
                trigger=trigger,
                status="skipped",
                summary=result.line(),
                schedule_id=schedule_id,
            )
            logger.warning("%s", result.line())
            return result
        with _LeaseGuard(
            self.ledger,
            lease,
            ttl=self._lease_ttl,
            heartbeat_seconds=self._heartbeat_seconds,
            outer_stop=self.stop,
        ) as guard:
            result = RunResult(campaign, "failed")
            try:
                self._run_steps(result, guard.run_stop)
                result.status = "interrupted" if guard.run_stop.is_set() else "done"
            except UserError as exc:
                result.error = str(exc)
            except Exception as exc:
                logger.exception("campaign %s: run failed", campaign)
                result.error = f"{type(exc).__name__}: {exc}"
        result.seconds = time.monotonic() - started
        # A lease taken over while we ran (we stalled past its expiry) cannot be closed.
        if guard.lost or not schedule_store.finish_run(
            self.ledger, guard.lease, result.status, result.line()
        ):
            result.status = "lost"
        logger.log(
            logging.INFO if result.status == "done" else logging.WARNING, "%s", result.line()
        )
        return result

    def _run_steps(self, result: RunResult, stop: threading.Event) -> None:
        config, from_file = self._source(result.campaign)
        if from_file:
            self._import_new(config, result)
        if not stop.is_set():
            line = self.dialer(config, self.ledger, stop)
            result.dialer = line.removeprefix(f"campaign {config.name}: ")
        result.workbook = self._write_workbook(config)

    def _import_new(self, config: CampaignConfig, result: RunResult) -> None:
        """Import what is new in the campaign file's sheets and its inbox."""
        for sheet in config.contacts:
            try:
                # The source `dialer import` and `dialer run` record: the absolute path.
                result.new_contacts += self._import(config, sheet, str(sheet.resolve()))
                result.sheets_imported += 1
            except LEDGER_FAULTS:
                raise
            except Exception as exc:  # any sheet's failure is that sheet's, not the run's
                reason = " ".join(str(exc).split()) or type(exc).__name__
                result.sheet_errors.append(f"{sheet.name}: {reason}")
                logger.warning(
                    "campaign %s: sheet %s not imported: %s",
                    config.name,
                    sheet,
                    reason,
                    exc_info=None if isinstance(exc, UserError) else exc,
                )
        picked = pick_up(
            InboxPaths(self.campaigns_dir / config.name),
            lambda path, source: self._import(config, path, source),
            min_age_seconds=self._inbox_min_age,
            keep_on=LEDGER_FAULTS,
        )
        result.inbox_imported = len(picked.imported)
        result.inbox_failed = len(picked.failed)
        result.new_contacts += sum(added for _path, added in picked.imported)

    def _import(self, config: CampaignConfig, sheet: Path, source: str) -> int:
        """Validate and import one sheet; returns how many contacts were new."""
        checked = validate_sheet(sheet, region=config.region)
        summary = import_contacts(self.ledger, config.name, checked, source)
        logger.info(
            "campaign %s: %s: %d new, %d already present, %d rejected, %d duplicate(s)",
            config.name,
            source,
            summary.new,
            summary.already_present,
            summary.rejected,
            summary.duplicates,
        )
        return summary.new

    def _write_workbook(self, config: CampaignConfig) -> Path:
        out = default_report_path(config.name, datetime.now().astimezone(), self.reports_dir)
        return write_report(self.ledger, config.name, out)


def campaign_scheduler(
    settings: Settings, *, database_url: str | None = None, campaigns_dir: Path
) -> CampaignScheduler:
    """The scheduler the CLI runs: the settings' ledger and reports folder, the real engine."""
    return CampaignScheduler(
        open_ledger(database_url or settings.database_url),
        campaigns_dir=campaigns_dir,
        reports_dir=settings.reports_dir,
        dialer=dial_campaign,
    )
