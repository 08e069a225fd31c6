"""Schedules and the per-campaign run lock (a lease row in `campaign_runs`).

The lock is the partial unique index `uq_campaign_runs_open`: at most one row per
campaign without `finished_at`. Taking it is one transaction on either backend:
close an expired lease (its owner crashed or hung), then insert ours with
`ON CONFLICT DO NOTHING`. Two scheduler processes on one PostgreSQL ledger race on
that index, and exactly one insert wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from campaign.store.db import Ledger
from campaign.store.models import CampaignRun, Schedule, utcnow

#: Terminal statuses a run row can be closed with.
RUN_STATUSES = frozenset(
    {"done", "failed", "interrupted", "abandoned", "skipped", "missed", "lost"}
)


@dataclass(frozen=True)
class Lease:
    """A held run lock: renew it before `expires_at`, finish it when the run ends."""

    run_id: int
    campaign: str
    owner: str
    expires_at: datetime


def add_schedule(
    ledger: Ledger, campaign: str, cron: str, timezone: str, misfire_grace_seconds: int
) -> Schedule:
    with ledger.session() as s:
        row = Schedule(
            campaign=campaign,
            cron=cron,
            timezone=timezone,
            misfire_grace_seconds=misfire_grace_seconds,
        )
        s.add(row)
        s.flush()
        return row


def get_schedule(ledger: Ledger, schedule_id: int) -> Schedule | None:
    with ledger.session() as s:
        return s.get(Schedule, schedule_id)


def list_schedules(ledger: Ledger, campaign: str | None = None) -> list[Schedule]:
    query = select(Schedule).order_by(Schedule.id)
    if campaign is not None:
        query = query.where(Schedule.campaign == campaign)
    with ledger.session() as s:
        return list(s.scalars(query))


def delete_schedule(ledger: Ledger, schedule_id: int) -> bool:
    with ledger.session() as s:
        return s.execute(delete(Schedule).where(Schedule.id == schedule_id)).rowcount == 1  # type: ignore[attr-defined,no-any-return]


def acquire_run(
    ledger: Ledger,
    campaign: str,
    *,
    owner: str,
    trigger: str,
    ttl: timedelta,
    schedule_id: int | None = None,
    now: datetime | None = None,
) -> Lease | None:
    """Take the campaign's run lock, or return None while another live run holds it."""
    now = now or utcnow()
    values: dict[str, Any] = {
        "campaign": campaign,
        "schedule_id": schedule_id,
        "trigger": trigger,
        "owner": owner,
        "status": "running",
        "started_at": now,
        "heartbeat_at": now,
        "expires_at": now + ttl,
    }
    insert = pg_insert if ledger.is_postgres else sqlite_insert
    statement = (
        insert(CampaignRun)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=[CampaignRun.campaign],
            index_where=CampaignRun.finished_at.is_(None),
        )
        .returning(CampaignRun.id)
    )
    with ledger.session() as s:
        # A lease whose owner stopped renewing it is over: close it so ours can be inserted.
        s.execute(
            update(CampaignRun)
            .where(
                CampaignRun.campaign == campaign,
                CampaignRun.finished_at.is_(None),
                CampaignRun.expires_at < now,
            )
            .values(status="abandoned", finished_at=now, summary="lease expired; taken over")
        )
        run_id = s.execute(statement).scalar_one_or_none()
    if run_id is None:
        return None
    return Lease(run_id=run_id, campaign=campaign, owner=owner, expires_at=now + ttl)


def renew_run(ledger: Ledger, lease: Lease, ttl: timedelta) -> Lease | None:
    """Push the lease's expiry out; None when it was lost (taken over after expiring)."""
    now = utcnow()
    with ledger.session() as s:
        result = s.execute(
            update(CampaignRun)
            .where(
                CampaignRun.id == lease.run_id,
                CampaignRun.owner == lease.owner,
                CampaignRun.finished_at.is_(None),
            )
            .values(heartbeat_at=now, expires_at=now + ttl)
        )
        renewed = result.rowcount == 1  # type: ignore[attr-defined]
    if not renewed:
        return None
    return Lease(lease.run_id, lease.campaign, lease.owner, now + ttl)


def finish_run(ledger: Ledger, lease: Lease, status: str, summary: str) -> bool:
    """Close the run and release the lock; False when the lease had been taken over."""
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    with ledger.session() as s:
        result = s.execute(
            update(CampaignRun)
            .where(
                CampaignRun.id == lease.run_id,
                CampaignRun.owner == lease.owner,
                CampaignRun.finished_at.is_(None),
            )
            .values(status=status, finished_at=utcnow(), summary=summary)
        )
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def record_run(
    ledger: Ledger,
    campaign: str,
    *,
    owner: str,
    trigger: str,
    status: str,
    summary: str,
    schedule_id: int | None = None,
    scheduled_for: datetime | None = None,
) -> None:
    """A run that never started (skipped, missed), written closed so it never holds the lock."""
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    now = utcnow()
    with ledger.session() as s:
        s.add(
            CampaignRun(
                campaign=campaign,
                schedule_id=schedule_id,
                trigger=trigger,
                owner=owner,
                status=status,
                scheduled_for=scheduled_for,
                started_at=now,
                heartbeat_at=now,
                expires_at=now,
                finished_at=now,
                summary=summary,
            )
        )


def open_run(ledger: Ledger, campaign: str) -> CampaignRun | None:
    """The run currently holding the campaign's lock, if any."""
    with ledger.session() as s:
        return s.scalars(
            select(CampaignRun).where(
                CampaignRun.campaign == campaign, CampaignRun.finished_at.is_(None)
            )
        ).one_or_none()


def recent_runs(ledger: Ledger, campaign: str | None = None, limit: int = 20) -> list[CampaignRun]:
    """Newest runs first."""
    query = select(CampaignRun).order_by(CampaignRun.id.desc()).limit(limit)
    if campaign is not None:
        query = query.where(CampaignRun.campaign == campaign)
    with ledger.session() as s:
        return list(s.scalars(query))
