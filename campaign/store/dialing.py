"""Ledger queries for dialing: claims, the attempt lifecycle, reconciliation, control.

Every function runs in its own transaction and returns plain dataclasses, so the
engine never holds ORM objects across awaits. The claim is the one place where
concurrency matters: it serialises on the campaign row (PostgreSQL
`SELECT ... FOR UPDATE`, SQLite `BEGIN IMMEDIATE`), so the in-flight count, the
shared pacing bucket and the contact it picks are consistent across every
dialer process sharing the ledger; candidate contacts are read with
`FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session

from campaign.outcomes import (
    FINAL_CONTACT_STATUSES,
    AttemptStatus,
    CampaignStatus,
    ContactStatus,
    Outcome,
)
from campaign.pacing import TokenBucket
from campaign.store.db import Ledger
from campaign.store.leases import db_now
from campaign.store.models import Attempt, CallRecord, Campaign, Contact, DialerLease, DncEntry

#: contact statuses the claim picks from
DUE_STATUSES = (ContactStatus.PENDING.value, ContactStatus.RETRY.value)
IN_FLIGHT = (AttemptStatus.DIALING.value, AttemptStatus.IN_CALL.value)
#: attempt outcomes after which nobody was dialed (not counted against max attempts)
UNDIALED_OUTCOMES = (
    Outcome.AGENT_UNAVAILABLE.value,
    Outcome.DO_NOT_CALL.value,
    Outcome.CANCELLED.value,
)


class CampaignNotFound(LookupError):
    """No campaign of that name in the ledger."""


@dataclass(frozen=True)
class Claimed:
    """A contact claimed for one attempt; the attempt row (`dialing`) is committed."""

    attempt_id: int
    number: int
    contact_id: int
    e164: str
    extension: str | None
    name: str | None
    variables: dict[str, str]
    timezones: list[str]
    room_name: str
    is_test: bool


ClaimReason = Literal["claimed", "inactive", "capped", "paced", "none_due"]


@dataclass(frozen=True)
class ClaimResult:
    reason: ClaimReason
    campaign_status: str
    in_flight: int
    claimed: Claimed | None = None
    #: for `paced`: seconds until the shared bucket has a token
    wait: float = 0.0


@dataclass(frozen=True)
class InFlight:
    """An attempt left `dialing` or `in_call`, as reconciliation sees it."""

    attempt_id: int
    contact_id: int
    e164: str
    status: str
    room_name: str
    dialer_id: str
    claimed_at: datetime
    dial_started_at: datetime | None
    answered_at: datetime | None
    #: the owner's lease is current (it may be finishing the attempt itself)
    owner_alive: bool = False


@dataclass(frozen=True)
class CallView:
    """What the dialer reads from the agent's call record."""

    amd_result: str | None
    disposition: str | None
    end_reason: str | None
    added_to_dnc: bool
    answered_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class Finalised:
    """The result of finalising an attempt: the contact's new status and due time."""

    outcome: Outcome
    contact_status: str
    next_attempt_at: datetime | None
    dials: int


@dataclass
class CampaignSummary:
    """What `dialer status` and the live view show."""

    name: str
    status: str
    contacts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    attempts: int = 0
    dials: int = 0
    next_attempt_at: datetime | None = None
    first_dial_at: datetime | None = None
    last_dial_at: datetime | None = None
    #: what each live dialer of the campaign is doing (filled by the runner's `status`)
    dialers: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return sum(n for s, n in self.contacts.items() if s not in FINAL_CONTACT_STATUSES)


def _serialise(session: Session) -> None:
    """Take SQLite's write lock now, so a claim's read and write are one serial step."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")


def ensure_campaign(
    ledger: Ledger, name: str, *, region: str, config: dict[str, Any]
) -> tuple[int, str]:
    """The campaign's id and status, creating the row if needed and storing the config."""
    with ledger.session() as session:
        _serialise(session)
        campaign = session.scalar(select(Campaign).where(Campaign.name == name))
        if campaign is None:
            campaign = Campaign(name=name, region=region, status=CampaignStatus.ACTIVE.value)
            session.add(campaign)
        campaign.config = config
        campaign.region = region
        session.flush()
        return campaign.id, campaign.status


def campaign_id(ledger: Ledger, name: str) -> int:
    with ledger.session() as session:
        found = session.scalar(select(Campaign.id).where(Campaign.name == name))
    if found is None:
        raise CampaignNotFound(f"no campaign named {name!r} in the ledger")
    return found


def contact_count(ledger: Ledger, campaign: int) -> int:
    with ledger.session() as session:
        return (
            session.scalar(
                select(func.count()).select_from(Contact).where(Contact.campaign_id == campaign)
            )
            or 0
        )


def _in_flight_count(session: Session, campaign: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.campaign_id == campaign, Attempt.status.in_(IN_FLIGHT))
        )
        or 0
    )


def _on_dnc(e164: Any) -> Any:
    return exists().where(DncEntry.e164 == e164)


def new_attempt(
    session: Session,
    contact: Contact,
    *,
    campaign_name: str,
    dialer_id: str,
    is_test: bool,
    now: datetime,
) -> Attempt:
    """Write the contact's next attempt row (`dialing`) and mark the contact in progress.

    The one place attempts are numbered and rooms named (`<campaign>-<contact>-<attempt>`),
    for campaign claims and `dialer call` alike.
    """
    last = session.scalar(select(func.max(Attempt.number)).where(Attempt.contact_id == contact.id))
    number = (last or 0) + 1
    attempt = Attempt(
        campaign_id=contact.campaign_id,
        contact_id=contact.id,
        number=number,
        status=AttemptStatus.DIALING.value,
        room_name=f"{campaign_name}-{contact.id}-{number}",
        dialer_id=dialer_id,
        is_test=is_test,
        claimed_at=now,
    )
    session.add(attempt)
    contact.status = ContactStatus.IN_PROGRESS.value
    session.flush()
    return attempt


def claim_next(
    ledger: Ledger,
    campaign: int,
    *,
    campaign_name: str,
    dialer_id: str,
    now: datetime,
    wall: float,
    max_concurrent: int,
    bucket: TokenBucket,
    dialable: Callable[[Sequence[str]], bool],
    is_test: bool = False,
    batch: int = 200,
) -> ClaimResult:
    """Claim one due, dialable contact and write its attempt row, all in one transaction.

    `now` (the injected clock) decides what is due and `dialable(timezones)` applies
    the calling hours; `wall` (real epoch seconds) drives the pacing bucket, whose
    state lives on the campaign row so every process shares it.
    """
    with ledger.session() as session:
        _serialise(session)
        row = session.execute(
            select(Campaign).where(Campaign.id == campaign).with_for_update()
        ).scalar_one()
        in_flight = _in_flight_count(session, campaign)
        if row.status != CampaignStatus.ACTIVE.value:
            return ClaimResult("inactive", row.status, in_flight)
        if in_flight >= max_concurrent:
            return ClaimResult("capped", row.status, in_flight)
        bucket.tat = row.pace_tat if row.pace_tat is not None else -math.inf
        wait = bucket.wait_time(wall)
        if wait > 0:
            return ClaimResult("paced", row.status, in_flight, wait=wait)

        picked: Contact | None = None
        after = 0
        while picked is None:
            candidates = session.scalars(
                select(Contact)
                .where(
                    Contact.campaign_id == campaign,
                    Contact.status.in_(DUE_STATUSES),
                    Contact.is_test.is_(False),  # a test call's contact is never claimed
                    or_(Contact.next_attempt_at.is_(None), Contact.next_attempt_at <= now),
                    ~_on_dnc(Contact.e164),
                    Contact.id > after,
                )
                .order_by(Contact.id)
                .limit(batch)
                .with_for_update(skip_locked=True, of=Contact)
            ).all()
            picked = next((c for c in candidates if dialable(c.timezones or [])), None)
            if len(candidates) < batch:
                break
            after = candidates[-1].id
        if picked is None:
            return ClaimResult("none_due", row.status, in_flight)

        bucket.try_take(wall)
        row.pace_tat = bucket.tat
        attempt = new_attempt(
            session,
            picked,
            campaign_name=campaign_name,
            dialer_id=dialer_id,
            is_test=is_test or picked.is_test,
            now=now,
        )
        number = attempt.number
        claimed = Claimed(
            attempt_id=attempt.id,
            number=number,
            contact_id=picked.id,
            e164=picked.e164,
            extension=picked.extension,
            name=picked.name,
            variables={str(k): str(v) for k, v in (picked.variables or {}).items()},
            timezones=[str(z) for z in picked.timezones or []],
            room_name=attempt.room_name,
            is_test=attempt.is_test,
        )
        return ClaimResult("claimed", row.status, in_flight + 1, claimed)


def on_dnc_list(ledger: Ledger, e164: str) -> bool:
    with ledger.session() as session:
        return session.get(DncEntry, e164) is not None


def campaign_status(ledger: Ledger, campaign: int) -> str:
    with ledger.session() as session:
        return session.scalar(select(Campaign.status).where(Campaign.id == campaign)) or ""


def mark_dial_started(ledger: Ledger, attempt_id: int, at: datetime) -> bool:
    """Record that the SIP call is about to be placed. False: someone else owns the attempt now."""
    with ledger.session() as session:
        result = session.execute(
            update(Attempt)
            .where(
                Attempt.id == attempt_id,
                Attempt.status == AttemptStatus.DIALING.value,
                Attempt.dial_started_at.is_(None),
            )
            .values(dial_started_at=at)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_answered(ledger: Ledger, attempt_id: int, at: datetime) -> None:
    with ledger.session() as session:
        session.execute(
            update(Attempt)
            .where(Attempt.id == attempt_id, Attempt.status == AttemptStatus.DIALING.value)
            .values(status=AttemptStatus.IN_CALL.value, answered_at=at)
        )


def call_record(ledger: Ledger, attempt_id: int) -> CallView | None:
    with ledger.session() as session:
        record = session.scalar(select(CallRecord).where(CallRecord.attempt_id == attempt_id))
        if record is None:
            return None
        return CallView(
            amd_result=record.amd_result,
            disposition=record.disposition,
            end_reason=record.end_reason,
            added_to_dnc=record.added_to_dnc,
            answered_at=record.answered_at,
            ended_at=record.ended_at,
        )


Decide = Callable[[Outcome, int, int], tuple[ContactStatus, datetime | None]]


def finalise_attempt(
    ledger: Ledger,
    attempt_id: int,
    *,
    outcome: Outcome,
    ended_at: datetime,
    decide: Decide,
    sip_status_code: int | None = None,
    sip_status: str | None = None,
    error: str | None = None,
    answered_at: datetime | None = None,
    disposition: str | None = None,
    add_dnc: bool = False,
    only_undialed: bool = False,
) -> Finalised | None:
    """Close the attempt and move its contact on, once; None if it was already closed.

    `decide(outcome, dials, same_outcome)` returns the contact's next status and due
    time (the retry rules); the counts include this attempt. With `only_undialed` the
    update is guarded by `dialing AND dial_started_at IS NULL`: None means the owner
    dialed meanwhile (or closed it), so the attempt is not settled here.
    """
    with ledger.session() as session:
        _serialise(session)
        values: dict[str, Any] = {
            "status": AttemptStatus.DONE.value,
            "outcome": outcome.value,
            "sip_status_code": sip_status_code,
            "sip_status": sip_status,
            "error": error,
            "ended_at": ended_at,
        }
        if answered_at is not None:
            values["answered_at"] = answered_at
        guard = (
            (Attempt.status == AttemptStatus.DIALING.value) & Attempt.dial_started_at.is_(None)
            if only_undialed
            else Attempt.status != AttemptStatus.DONE.value
        )
        done = session.execute(
            update(Attempt).where(Attempt.id == attempt_id, guard).values(**values)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            return None
        attempt = session.get(Attempt, attempt_id)
        assert attempt is not None  # the update above matched it
        contact = session.get(Contact, attempt.contact_id, with_for_update=True)
        assert contact is not None  # attempts cascade with their contact
        history = session.execute(
            select(Attempt.outcome, func.count())
            .where(Attempt.contact_id == contact.id, Attempt.status == AttemptStatus.DONE.value)
            .group_by(Attempt.outcome)
        ).all()
        counts = {str(o): int(n) for o, n in history}
        dials = sum(n for o, n in counts.items() if o not in UNDIALED_OUTCOMES)
        status, next_at = decide(outcome, dials, counts.get(outcome.value, 0))
        if add_dnc:
            status, next_at = ContactStatus.DNC, None
            if session.get(DncEntry, contact.e164) is None:
                session.add(DncEntry(e164=contact.e164, source="agent", note="asked on a call"))
        campaign_state = session.scalar(
            select(Campaign.status).where(Campaign.id == contact.campaign_id)
        )
        if status == ContactStatus.RETRY and campaign_state == CampaignStatus.CANCELLED.value:
            status, next_at = ContactStatus.CANCELLED, None
        contact.status = status.value
        contact.next_attempt_at = next_at
        contact.attempts_count = dials
        contact.last_outcome = outcome.value
        if disposition:
            contact.disposition = disposition
        return Finalised(outcome, status.value, next_at, dials)


def in_flight_attempts(ledger: Ledger, campaign: int) -> list[InFlight]:
    """Attempts left `dialing` or `in_call` (by this process, another, or a dead one),
    each with whether its owner's lease is current (by the database's clock)."""
    with ledger.session() as session:
        now = db_now(session)
        alive = set(
            session.scalars(select(DialerLease.dialer_id).where(DialerLease.expires_at > now))
        )
        rows = session.execute(
            select(Attempt, Contact.e164)
            .join(Contact, Contact.id == Attempt.contact_id)
            .where(Attempt.campaign_id == campaign, Attempt.status.in_(IN_FLIGHT))
            .order_by(Attempt.id)
        ).all()
        return [
            InFlight(
                attempt_id=a.id,
                contact_id=a.contact_id,
                e164=e164,
                status=a.status,
                room_name=a.room_name,
                dialer_id=a.dialer_id,
                claimed_at=a.claimed_at,
                dial_started_at=a.dial_started_at,
                answered_at=a.answered_at,
                owner_alive=a.dialer_id in alive,
            )
            for a, e164 in rows
        ]


def contact_timezones(ledger: Ledger, contact_id: int) -> list[str]:
    with ledger.session() as session:
        zones = session.scalar(select(Contact.timezones).where(Contact.id == contact_id))
        return [str(z) for z in zones or []]


def close_dnc_contacts(ledger: Ledger, campaign: int) -> int:
    """Close waiting contacts whose number joined the DNC list; returns how many."""
    with ledger.session() as session:
        result = session.execute(
            update(Contact)
            .where(
                Contact.campaign_id == campaign,
                Contact.status.in_(DUE_STATUSES),
                _on_dnc(Contact.e164),
            )
            .values(status=ContactStatus.DNC.value, next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def waiting_contacts(ledger: Ledger, campaign: int) -> list[tuple[list[str], datetime | None]]:
    """(timezones, next_attempt_at) of every contact still to be dialed."""
    with ledger.session() as session:
        rows = session.execute(
            select(Contact.timezones, Contact.next_attempt_at).where(
                Contact.campaign_id == campaign,
                Contact.status.in_(DUE_STATUSES),
                Contact.is_test.is_(False),
            )
        ).all()
        return [([str(z) for z in zones or []], at) for zones, at in rows]


def set_campaign_status(ledger: Ledger, name: str, status: CampaignStatus) -> str:
    """Set a campaign's status; returns the previous one. Cancelling closes waiting contacts."""
    with ledger.session() as session:
        _serialise(session)
        campaign = session.scalar(select(Campaign).where(Campaign.name == name).with_for_update())
        if campaign is None:
            raise CampaignNotFound(f"no campaign named {name!r} in the ledger")
        previous = campaign.status
        campaign.status = status.value
        if status == CampaignStatus.CANCELLED:
            session.execute(
                update(Contact)
                .where(Contact.campaign_id == campaign.id, Contact.status.in_(DUE_STATUSES))
                .values(status=ContactStatus.CANCELLED.value, next_attempt_at=None)
                .execution_options(synchronize_session=False)
            )
        return previous


def summary(ledger: Ledger, name: str) -> CampaignSummary:
    """Counts for `dialer status` and the live view."""
    with ledger.session() as session:
        campaign = session.scalar(select(Campaign).where(Campaign.name == name))
        if campaign is None:
            raise CampaignNotFound(f"no campaign named {name!r} in the ledger")
        result = CampaignSummary(name=name, status=campaign.status)
        # test calls (`dialer call`) have contacts of their own, left out of the counts
        real = (Contact.campaign_id == campaign.id) & Contact.is_test.is_(False)
        attempts = select(Attempt).join(Contact, Contact.id == Attempt.contact_id).where(real)
        for status, n in session.execute(
            select(Contact.status, func.count()).where(real).group_by(Contact.status)
        ):
            result.contacts[str(status)] = int(n)
        for outcome, n in session.execute(
            attempts.with_only_columns(Attempt.outcome, func.count())
            .where(Attempt.outcome.is_not(None))
            .group_by(Attempt.outcome)
        ):
            result.outcomes[str(outcome)] = int(n)
        result.in_flight = _in_flight_count(session, campaign.id)
        result.attempts = session.scalar(attempts.with_only_columns(func.count())) or 0
        dialed = attempts.with_only_columns(
            func.count(), func.min(Attempt.dial_started_at), func.max(Attempt.dial_started_at)
        ).where(Attempt.dial_started_at.is_not(None))
        count, first, last = session.execute(dialed).one()
        result.dials = int(count or 0)
        result.first_dial_at, result.last_dial_at = first, last
        result.next_attempt_at = session.scalar(
            select(func.min(Contact.next_attempt_at)).where(real, Contact.status.in_(DUE_STATUSES))
        )
        return result
