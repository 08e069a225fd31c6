"""The guarded dial mark with the dial-time DNC check in it (`store.start_dial`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from campaign.outcomes import ContactStatus, Outcome
from campaign.pacing import TokenBucket
from campaign.store import Attempt, Contact, DncEntry, Ledger, open_ledger
from campaign.store import dialing as store
from campaign.windows import CallingWindow

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
ALWAYS = CallingWindow(start=0, end=24 * 60, days=frozenset(range(7)), override_legal_limits=True)


def claimed(url: str) -> tuple[Ledger, store.Claimed]:
    ledger = open_ledger(url)
    campaign, _ = store.ensure_campaign(ledger, "c", region="US", config={})
    with ledger.session() as session:
        session.add(Contact(campaign_id=campaign, e164="+12127360001", timezones=["UTC"]))
    result = store.claim_next(
        ledger,
        campaign,
        campaign_name="c",
        dialer_id="test",
        now=NOW,
        wall=time.time(),
        max_concurrent=10,
        bucket=TokenBucket(rate=1000.0),
        window=ALWAYS,
    )
    assert result.claimed is not None
    return ledger, result.claimed


def dial_started(ledger: Ledger, attempt_id: int) -> datetime | None:
    with ledger.session() as session:
        attempt = session.get(Attempt, attempt_id)
        assert attempt is not None
        return attempt.dial_started_at


def test_marks_the_dial_once(any_ledger_url: str) -> None:
    ledger, c = claimed(any_ledger_url)
    assert store.start_dial(ledger, c.attempt_id, c.e164, NOW) == "started"
    assert dial_started(ledger, c.attempt_id) == NOW
    assert store.start_dial(ledger, c.attempt_id, c.e164, NOW) == "taken"


def test_a_number_listed_after_the_claim_is_not_dialed(any_ledger_url: str) -> None:
    ledger, c = claimed(any_ledger_url)
    with ledger.session() as session:
        session.add(DncEntry(e164=c.e164, source="test"))
    assert store.start_dial(ledger, c.attempt_id, c.e164, NOW) == "on_dnc_list"
    assert dial_started(ledger, c.attempt_id) is None  # still undialed: the settle wins
    settled = store.finalise_attempt(
        ledger,
        c.attempt_id,
        outcome=Outcome.DO_NOT_CALL,
        ended_at=NOW,
        decide=lambda _o, _d, _s: (ContactStatus.DNC, None),
        only_undialed=True,
    )
    assert settled is not None


def test_an_attempt_settled_elsewhere_is_taken(any_ledger_url: str) -> None:
    ledger, c = claimed(any_ledger_url)
    settled = store.finalise_attempt(
        ledger,
        c.attempt_id,
        outcome=Outcome.CANCELLED,
        ended_at=NOW,
        decide=lambda _o, _d, _s: (ContactStatus.RETRY, NOW),
        only_undialed=True,
    )
    assert settled is not None
    assert store.start_dial(ledger, c.attempt_id, c.e164, NOW) == "taken"
    assert dial_started(ledger, c.attempt_id) is None
