"""Ledger queries for the desk (`campaign/web`): run requests, pages of attempts, chart data.

A run request is how an operator's "start" reaches a runner: the desk writes a
`pending` row; every `dialer serve` replica polls for one and takes it with a
single guarded update, so exactly one replica runs it. The run itself still takes
the campaign's run lock (`store.schedules.acquire_run`).
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from campaign.store.db import Ledger
from campaign.store.models import (
    Attempt,
    CallRecord,
    Campaign,
    CampaignRun,
    Contact,
    DeskUpload,
    DncEntry,
    RunRequest,
    Turn,
    utcnow,
)

#: a taken request with no live run lock for this long has lost its runner (the run lock's
#: own lease is 2 minutes; taking a request and locking the run are seconds apart)
TAKEN_TTL = timedelta(minutes=3)
#: request statuses that still wait for, or hold, a runner
OPEN_REQUESTS = ("pending", "taken")
FINISHED_REQUESTS = frozenset({"done", "failed", "skipped", "withdrawn", "interrupted", "lost"})


@dataclass(frozen=True)
class RequestView:
    id: int
    campaign: str
    requested_by: str
    requested_at: datetime
    status: str
    taken_by: str | None
    finished_at: datetime | None
    summary: str | None


def _view(row: RunRequest) -> RequestView:
    return RequestView(
        row.id,
        row.campaign,
        row.requested_by,
        row.requested_at,
        row.status,
        row.taken_by,
        row.finished_at,
        row.summary,
    )


def request_run(
    ledger: Ledger, campaign: str, requested_by: str, *, taken_ttl: timedelta = TAKEN_TTL
) -> tuple[RequestView, bool]:
    """Ask for a run of the campaign; (the request, True when new). An open one is reused,
    unless it was taken by a runner that no longer holds the campaign's run lock."""
    with ledger.session() as s:
        if s.get_bind().dialect.name == "sqlite":
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
        else:  # one open request per campaign, also when two operators press start at once
            s.scalar(select(Campaign.id).where(Campaign.name == campaign).with_for_update())
        open_row = s.scalar(
            select(RunRequest)
            .where(RunRequest.campaign == campaign, RunRequest.status.in_(OPEN_REQUESTS))
            .order_by(RunRequest.id)
            .limit(1)
        )
        if open_row is not None and not _abandoned(s, open_row, taken_ttl):
            return _view(open_row), False
        if open_row is not None:
            # Its runner stopped (crashed, lost the ledger) without closing it: a lease, not
            # a promise. The new request is run by whichever replica takes it.
            open_row.status = "lost"
            open_row.finished_at = utcnow()
            open_row.summary = f"its runner {open_row.taken_by} stopped before finishing"
        row = RunRequest(campaign=campaign, requested_by=requested_by, status="pending")
        s.add(row)
        s.flush()
        return _view(row), True


def _abandoned(s: Session, row: RunRequest, taken_ttl: timedelta) -> bool:
    """A taken request whose runner holds no live run lock and took it long ago."""
    if row.status != "taken" or row.taken_at is None:
        return False
    now = utcnow()
    live_run = s.scalar(
        select(CampaignRun.id).where(
            CampaignRun.campaign == row.campaign,
            CampaignRun.finished_at.is_(None),
            CampaignRun.expires_at > now,
        )
    )
    return live_run is None and row.taken_at < now - taken_ttl


def take_request(ledger: Ledger, owner: str) -> RequestView | None:
    """Take the oldest pending request for this runner; None when there is none left."""
    while True:
        with ledger.session() as s:
            candidate = s.scalar(
                select(RunRequest.id)
                .where(RunRequest.status == "pending")
                .order_by(RunRequest.id)
                .limit(1)
            )
            if candidate is None:
                return None
            taken = s.execute(
                update(RunRequest)
                .where(RunRequest.id == candidate, RunRequest.status == "pending")
                .values(status="taken", taken_by=owner, taken_at=utcnow())
            ).rowcount  # type: ignore[attr-defined]
            if taken == 1:
                row = s.get(RunRequest, candidate)
                assert row is not None
                s.refresh(row)
                return _view(row)
        # another replica took that one between our read and our update: look again


def finish_request(ledger: Ledger, request_id: int, status: str, summary: str) -> None:
    if status not in FINISHED_REQUESTS:
        raise ValueError(f"unknown run request status {status!r}")
    with ledger.session() as s:
        s.execute(
            update(RunRequest)
            .where(RunRequest.id == request_id)
            .values(status=status, finished_at=utcnow(), summary=summary)
        )


def withdraw_requests(ledger: Ledger, campaign: str, why: str) -> int:
    """Withdraw the campaign's pending (not yet taken) requests, e.g. on cancel."""
    with ledger.session() as s:
        return s.execute(  # type: ignore[attr-defined,no-any-return]
            update(RunRequest)
            .where(RunRequest.campaign == campaign, RunRequest.status == "pending")
            .values(status="withdrawn", finished_at=utcnow(), summary=why)
        ).rowcount


def requests_of(ledger: Ledger, campaign: str, limit: int = 10) -> list[RequestView]:
    """The campaign's newest run requests first."""
    with ledger.session() as s:
        rows = s.scalars(
            select(RunRequest)
            .where(RunRequest.campaign == campaign)
            .order_by(RunRequest.id.desc())
            .limit(limit)
        )
        return [_view(row) for row in rows]


def stored_config(ledger: Ledger, name: str) -> dict[str, Any] | None:
    """The campaign's stored settings (`Campaign.config`); None when there is no campaign."""
    with ledger.session() as s:
        found = s.execute(select(Campaign.config).where(Campaign.name == name)).one_or_none()
    return None if found is None else dict(found[0] or {})


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class AttemptLine:
    """One row of the campaign page's attempts table."""

    id: int
    number: int
    contact_name: str | None
    e164: str
    timezones: list[str]
    status: str
    outcome: str | None
    disposition: str | None
    claimed_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    has_transcript: bool
    is_test: bool = False  #: a test call (`dialer call`, the desk's test call)


def attempts_page(
    ledger: Ledger, campaign_id: int, *, outcome: str | None, offset: int, limit: int
) -> tuple[list[AttemptLine], int]:
    """A page of the campaign's attempts (newest first, test calls included) and the total."""
    where = [Attempt.campaign_id == campaign_id]
    if outcome:
        where.append(Attempt.outcome == outcome)
    query = (
        select(
            Attempt.id,
            Attempt.number,
            Contact.name,
            Contact.e164,
            Contact.timezones,
            Attempt.status,
            Attempt.outcome,
            CallRecord.disposition,
            Attempt.claimed_at,
            Attempt.answered_at,
            Attempt.ended_at,
            CallRecord.transcript,
            Attempt.is_test,
        )
        .join(Contact, Contact.id == Attempt.contact_id)
        .outerjoin(CallRecord, CallRecord.attempt_id == Attempt.id)
        .where(*where)
        .order_by(Attempt.id.desc())
        .offset(offset)
        .limit(limit)
    )
    with ledger.session() as s:
        total = s.scalar(select(func.count()).select_from(Attempt).where(*where)) or 0
        lines = [
            AttemptLine(
                r[0],
                r[1],
                r[2],
                r[3],
                list(r[4] or []),
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                bool(r[11]),  # None, or [] when nobody spoke
                bool(r[12]),
            )
            for r in s.execute(query)
        ]
    return lines, total


@dataclass(frozen=True)
class TurnLine:
    index: int
    user_text: str | None
    agent_text: str | None
    total_latency: float | None
    end_of_turn_delay: float | None
    llm_ttft: float | None
    tts_ttfb: float | None


@dataclass(frozen=True)
class AttemptDetail:
    line: AttemptLine
    sip_status_code: int | None
    sip_status: str | None
    error: str | None
    amd_result: str | None
    end_reason: str | None
    disposition_note: str | None
    transcript: list[dict[str, Any]]
    turns: list[TurnLine]


def attempt_detail(ledger: Ledger, campaign_id: int, attempt_id: int) -> AttemptDetail | None:
    """One attempt with its call record: transcript, disposition, per-turn latency."""
    with ledger.session() as s:
        attempt = s.get(Attempt, attempt_id)
        if attempt is None or attempt.campaign_id != campaign_id:
            return None
        contact, call = attempt.contact, attempt.call
        line = AttemptLine(
            attempt.id,
            attempt.number,
            contact.name,
            contact.e164,
            list(contact.timezones or []),
            attempt.status,
            attempt.outcome,
            call.disposition if call else None,
            attempt.claimed_at,
            attempt.answered_at,
            attempt.ended_at,
            bool(call and call.transcript),
            attempt.is_test,
        )
        turns = [
            TurnLine(
                t.index,
                t.user_text,
                t.agent_text,
                t.total_latency,
                t.end_of_turn_delay,
                t.llm_ttft,
                t.tts_ttfb,
            )
            for t in (call.turns if call else [])
        ]
        transcript = (
            [item for item in (call.transcript or []) if isinstance(item, dict)] if call else []
        )
        return AttemptDetail(
            line,
            attempt.sip_status_code,
            attempt.sip_status,
            attempt.error,
            call.amd_result if call else None,
            call.end_reason if call else None,
            call.disposition_note if call else None,
            transcript,
            turns,
        )


def _real_attempts(campaign_id: int) -> Any:
    return (Attempt.campaign_id == campaign_id) & Attempt.is_test.is_(False)


def outcome_counts(ledger: Ledger, campaign_id: int) -> Counter[str]:
    """Attempts by outcome (test calls left out), for the outcomes chart."""
    with ledger.session() as s:
        rows = s.execute(
            select(Attempt.outcome, func.count())
            .where(_real_attempts(campaign_id), Attempt.outcome.is_not(None))
            .group_by(Attempt.outcome)
        )
        return Counter({str(outcome): int(n) for outcome, n in rows})


def dial_times(ledger: Ledger, campaign_id: int) -> list[tuple[datetime, list[str], str | None]]:
    """(UTC dial time, the contact's zones, outcome) of every dialed attempt."""
    with ledger.session() as s:
        rows = s.execute(
            select(Attempt.dial_started_at, Contact.timezones, Attempt.outcome)
            .join(Contact, Contact.id == Attempt.contact_id)
            .where(_real_attempts(campaign_id), Attempt.dial_started_at.is_not(None))
        )
        return [(at, list(zones or []), outcome) for at, zones, outcome in rows]


def turn_latencies(ledger: Ledger, campaign_id: int) -> list[float]:
    """Every measured per-turn latency of the campaign's calls (seconds)."""
    with ledger.session() as s:
        return [
            float(v or 0.0)  # NULLs are filtered out below
            for v in s.scalars(
                select(Turn.total_latency)
                .join(CallRecord, CallRecord.id == Turn.call_id)
                .join(Attempt, Attempt.id == CallRecord.attempt_id)
                .where(_real_attempts(campaign_id), Turn.total_latency.is_not(None))
            )
        ]


def campaign_ids(ledger: Ledger) -> dict[str, int]:
    with ledger.session() as s:
        return {name: cid for cid, name in s.execute(select(Campaign.id, Campaign.name))}


def search_dnc(
    ledger: Ledger, query: str, *, offset: int, limit: int
) -> tuple[list[tuple[str, str, str | None, datetime]], int]:
    """Do-not-call entries whose number contains `query` (digits), newest first, and the total."""
    digits = "".join(ch for ch in query if ch.isdigit())
    where = [DncEntry.e164.contains(digits, autoescape=True)] if digits else []
    with ledger.session() as s:
        total = s.scalar(select(func.count()).select_from(DncEntry).where(*where)) or 0
        rows = s.execute(
            select(DncEntry.e164, DncEntry.source, DncEntry.note, DncEntry.added_at)
            .where(*where)
            .order_by(DncEntry.added_at.desc(), DncEntry.e164)
            .offset(offset)
            .limit(limit)
        )
        return [(e, src, note, at) for e, src, note, at in rows], total


# --------------------------------------------------------------------------- uploads

#: an upload not imported within this long is deleted
UPLOAD_TTL_HOURS = 24


def save_upload(ledger: Ledger, user_id: int, label: str, data: bytes) -> str:
    """Keep an uploaded sheet under a random id (never its name); returns the id."""
    upload_id = secrets.token_urlsafe(24)
    with ledger.session() as s:
        s.execute(
            delete(DeskUpload).where(
                DeskUpload.created_at < utcnow() - timedelta(hours=UPLOAD_TTL_HOURS)
            )
        )
        s.add(DeskUpload(id=upload_id, user_id=user_id, label=label[:200], data=data))
    return upload_id


def load_upload(ledger: Ledger, upload_id: str) -> tuple[str, bytes] | None:
    """(label, bytes) of a held upload, or None when it is unknown or expired."""
    with ledger.session() as s:
        row = s.execute(
            select(DeskUpload.label, DeskUpload.data).where(
                DeskUpload.id == upload_id,
                DeskUpload.created_at >= utcnow() - timedelta(hours=UPLOAD_TTL_HOURS),
            )
        ).one_or_none()
    return None if row is None else (row[0], bytes(row[1]))


def drop_upload(ledger: Ledger, upload_id: str) -> None:
    with ledger.session() as s:
        s.execute(delete(DeskUpload).where(DeskUpload.id == upload_id))
