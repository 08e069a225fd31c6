"""Claims and the attempt lifecycle on a real ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from campaign.outcomes import AttemptStatus, CampaignStatus, ContactStatus, Outcome
from campaign.pacing import TokenBucket
from campaign.store import Attempt, Contact, DncEntry, Ledger, open_ledger
from campaign.store import dialing as store
from campaign.windows import CallingWindow

pytestmark = pytest.mark.integration

NY = ["America/New_York"]
NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)


#: open everywhere, every day: the claim tests below that are not about calling hours
ALWAYS = CallingWindow(start=0, end=24 * 60, days=frozenset(range(7)), override_legal_limits=True)


def setup(url: str, n: int, name: str = "c") -> tuple[Ledger, int]:
    ledger = open_ledger(url)
    campaign, _ = store.ensure_campaign(ledger, name, region="US", config={})
    with ledger.session() as session:
        for i in range(n):
            session.add(
                Contact(
                    campaign_id=campaign, e164=f"+1212736{i:04d}", timezones=["America/New_York"]
                )
            )
    return ledger, campaign


def claim(ledger: Ledger, campaign: int, **kw: object) -> store.ClaimResult:
    args: dict[str, object] = {
        "campaign_name": "c",
        "dialer_id": "test",
        "now": NOW,
        "wall": time.time(),
        "max_concurrent": 100,
        "bucket": TokenBucket(rate=1000.0),
        "window": ALWAYS,
    }
    args.update(kw)
    return store.claim_next(ledger, campaign, **args)  # type: ignore[arg-type]


def keep(status: ContactStatus, at: datetime | None = None) -> store.Decide:
    return lambda _o, _d, _s: (status, at)


def test_claim_writes_the_attempt_first(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 2)
    result = claim(ledger, campaign)
    assert result.reason == "claimed" and result.claimed is not None
    c = result.claimed
    assert c.room_name == f"c-{c.contact_id}-1" and c.number == 1
    with ledger.session() as session:
        attempt = session.get(Attempt, c.attempt_id)
        assert attempt is not None and attempt.status == AttemptStatus.DIALING
        assert attempt.claimed_at == NOW and attempt.dial_started_at is None
        contact = session.get(Contact, c.contact_id)
        assert contact is not None and contact.status == ContactStatus.IN_PROGRESS


def test_cap_is_counted_in_the_ledger(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 5)
    reasons = [claim(ledger, campaign, max_concurrent=2).reason for _ in range(3)]
    assert reasons == ["claimed", "claimed", "capped"]
    first = store.in_flight_attempts(ledger, campaign)[0]
    store.finalise_attempt(
        ledger,
        first.attempt_id,
        outcome=Outcome.BUSY,
        ended_at=NOW,
        decide=keep(ContactStatus.RETRY, NOW + timedelta(minutes=15)),
    )
    assert claim(ledger, campaign, max_concurrent=2).reason == "claimed"


def test_only_due_dialable_non_dnc_contacts(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 4)
    with ledger.session() as session:
        contacts = session.scalars(select(Contact).order_by(Contact.id)).all()
        contacts[0].status = ContactStatus.RETRY
        contacts[0].next_attempt_at = NOW + timedelta(seconds=1)  # not yet due
        contacts[1].status = ContactStatus.COMPLETED
        session.add(DncEntry(e164=contacts[2].e164))
        contacts[3].timezones = ["Asia/Tokyo"]
        ids = [c.id for c in contacts]
    # 15:00 UTC on a Wednesday: 10:00 in New York, midnight in Tokyo
    new_york_hours = CallingWindow()
    assert claim(ledger, campaign, window=new_york_hours).reason == "none_due"
    with ledger.session() as session:  # the claim found the listed number and closed it
        listed = session.get(Contact, ids[2])
        assert listed is not None and listed.status == ContactStatus.DNC and listed.due_at is None
    result = claim(ledger, campaign, now=NOW + timedelta(seconds=1), window=new_york_hours)
    assert result.claimed is not None and result.claimed.contact_id == ids[0]
    result = claim(ledger, campaign)
    assert result.claimed is not None and result.claimed.contact_id == ids[3]


def test_close_dnc_contacts_closes_only_waiting_listed_numbers(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 3)
    with ledger.session() as session:
        contacts = session.scalars(select(Contact).order_by(Contact.id)).all()
        contacts[1].status = ContactStatus.COMPLETED
        session.add_all([DncEntry(e164=contacts[0].e164), DncEntry(e164=contacts[1].e164)])
    assert store.close_dnc_contacts(ledger, campaign) == 1
    assert store.summary(ledger, "c").contacts == {"dnc": 1, "completed": 1, "pending": 1}


def test_claim_passes_over_closed_zone_sets(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 7)
    with ledger.session() as session:
        last = session.scalars(select(Contact).order_by(Contact.id.desc())).first()
        assert last is not None
        last.timezones = ["Europe/Paris"]
    # 15:00-20:00: 16:00 in Paris, 10:00 in New York
    afternoons = CallingWindow(start=15 * 60, end=20 * 60)
    result = claim(ledger, campaign, window=afternoons)
    assert result.claimed is not None and result.claimed.timezones == ["Europe/Paris"]
    assert claim(ledger, campaign, window=afternoons).reason == "none_due"


def test_pacing_bucket_is_shared_through_the_ledger(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 5)
    # Two dialers, each with its own bucket object: the campaign row holds the state.
    first, second = TokenBucket(rate=0.5), TokenBucket(rate=0.5)
    assert claim(ledger, campaign, wall=100.0, bucket=first).reason == "claimed"
    paced = claim(ledger, campaign, wall=101.0, bucket=second)
    assert paced.reason == "paced" and paced.wait == pytest.approx(1.0)
    assert claim(ledger, campaign, wall=102.0, bucket=second).reason == "claimed"


def test_paused_and_cancelled_campaigns_claim_nothing(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 3)
    assert store.set_campaign_status(ledger, "c", CampaignStatus.PAUSED) == "active"
    assert claim(ledger, campaign).reason == "inactive"
    store.set_campaign_status(ledger, "c", CampaignStatus.ACTIVE)
    assert claim(ledger, campaign).reason == "claimed"
    store.set_campaign_status(ledger, "c", CampaignStatus.CANCELLED)
    summary = store.summary(ledger, "c")
    assert summary.status == "cancelled"
    assert summary.contacts == {"cancelled": 2, "in_progress": 1}
    with pytest.raises(store.CampaignNotFound):
        store.set_campaign_status(ledger, "nope", CampaignStatus.PAUSED)


def test_finalise_once_and_count_dials(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 1)
    seen: list[tuple[Outcome, int, int]] = []

    def rules(outcome: Outcome, dials: int, same: int) -> tuple[ContactStatus, datetime | None]:
        seen.append((outcome, dials, same))
        return ContactStatus.RETRY, NOW

    for outcome in (Outcome.AGENT_UNAVAILABLE, Outcome.BUSY, Outcome.BUSY):
        c = claim(ledger, campaign).claimed
        assert c is not None
        assert store.mark_dial_started(ledger, c.attempt_id, NOW)
        assert not store.mark_dial_started(ledger, c.attempt_id, NOW)  # once only
        done = store.finalise_attempt(
            ledger, c.attempt_id, outcome=outcome, ended_at=NOW, decide=rules, sip_status_code=486
        )
        assert done is not None and done.contact_status == "retry"
        again = store.finalise_attempt(
            ledger, c.attempt_id, outcome=Outcome.FAILED, ended_at=NOW, decide=rules
        )
        assert again is None  # a second finaliser (a reconciler) changes nothing
    assert seen == [(Outcome.AGENT_UNAVAILABLE, 0, 1), (Outcome.BUSY, 1, 1), (Outcome.BUSY, 2, 2)]
    with ledger.session() as session:
        contact = session.scalars(select(Contact)).one()
        assert contact.attempts_count == 2 and contact.last_outcome == "busy"
        numbers = session.scalars(select(Attempt.number).order_by(Attempt.number)).all()
        assert numbers == [1, 2, 3]


def test_agent_dnc_closes_the_contact_and_lists_the_number(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 1)
    c = claim(ledger, campaign).claimed
    assert c is not None
    done = store.finalise_attempt(
        ledger,
        c.attempt_id,
        outcome=Outcome.ANSWERED,
        ended_at=NOW,
        decide=keep(ContactStatus.COMPLETED),
        add_dnc=True,
        disposition="not_interested",
    )
    assert done is not None and done.contact_status == "dnc"
    assert store.on_dnc_list(ledger, c.e164)


def run_claimers(
    url: str,
    rounds: int,
    on_claim: Callable[[Ledger, store.Claimed], datetime],
    *,
    cap: int,
    campaign: int,
    clock: Callable[[], tuple[datetime, float]] | None = None,
) -> None:
    """Four threads, each with its own ledger connection, claim `rounds` times and
    finalise what they claim at the time `on_claim` returns (after doing its part)."""
    errors: list[Exception] = []

    def worker(name: str) -> None:
        own = open_ledger(url, migrate=False)
        try:
            for _ in range(rounds):
                result = claim(own, campaign, dialer_id=name, max_concurrent=cap, clock=clock)
                if result.claimed is None:
                    continue
                store.finalise_attempt(
                    own,
                    result.claimed.attempt_id,
                    outcome=Outcome.ANSWERED,
                    ended_at=on_claim(own, result.claimed),
                    decide=keep(ContactStatus.COMPLETED),
                )
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(f"d{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert not any(t.is_alive() for t in threads)


def test_concurrent_claimers_keep_the_cap_and_never_share_a_contact(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 40)
    cap, claimed, peak = 3, [], [0]
    lock = threading.Lock()

    def count(own: Ledger, got: store.Claimed) -> datetime:
        with lock:
            claimed.append(got.contact_id)
            peak[0] = max(peak[0], len(store.in_flight_attempts(own, campaign)))
        return NOW

    run_claimers(any_ledger_url, 60, count, cap=cap, campaign=campaign)
    assert len(claimed) == len(set(claimed)) == 40
    assert peak[0] <= cap
    assert store.summary(ledger, "c").contacts == {"completed": 40}


def test_summary_counts(any_ledger_url: str) -> None:
    ledger, campaign = setup(any_ledger_url, 3)
    c = claim(ledger, campaign).claimed
    assert c is not None
    store.mark_dial_started(ledger, c.attempt_id, NOW)
    store.finalise_attempt(
        ledger,
        c.attempt_id,
        outcome=Outcome.NO_ANSWER,
        ended_at=NOW,
        decide=keep(ContactStatus.RETRY, NOW + timedelta(hours=2)),
    )
    summary = store.summary(ledger, "c")
    assert summary.outcomes == {"no_answer": 1}
    assert summary.dials == 1 and summary.attempts == 1 and summary.in_flight == 0
    assert summary.first_dial_at == NOW
    assert summary.next_attempt_at == NOW + timedelta(hours=2)
    assert summary.remaining == 3


def test_the_ledgers_own_times_never_show_more_calls_than_the_cap(any_ledger_url: str) -> None:
    """Claimed at (the claim's clock, read once it holds the campaign row) to ended at
    (the finaliser's clock, read before it writes) is a slot, as reports and the e2e
    tests read it. A finalise that commits while a claim holds the campaign row, after
    its stamp and before its count, frees a slot that claim takes at a moment the
    ledger shows the call still up: one call beyond the cap (seen on PostgreSQL)."""
    ledger, campaign = setup(any_ledger_url, 400)
    cap = 3

    def real_clock() -> tuple[datetime, float]:
        # read, then held up before the claim's next statement (a busy CPU's preemption)
        now, wall = datetime.now(UTC), time.time()
        time.sleep(0.01)
        return now, wall

    def call(own: Ledger, got: store.Claimed) -> datetime:
        time.sleep(0.05)  # the call
        return datetime.now(UTC)

    run_claimers(any_ledger_url, 100, call, cap=cap, campaign=campaign, clock=real_clock)
    with ledger.session() as session:
        slots = session.execute(
            select(Attempt.claimed_at, Attempt.ended_at).where(Attempt.campaign_id == campaign)
        ).all()
    edges = sorted([(s, 1) for s, _ in slots] + [(e, -1) for _, e in slots])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    assert len(slots) > 100
    assert peak <= cap
