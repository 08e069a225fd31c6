"""Retry rules per outcome, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from campaign.outcomes import ContactStatus, Outcome
from campaign.retry import Decision, RetryPolicy, decide, parse_duration

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
TOMORROW_9 = datetime(2026, 3, 5, 14, 0, tzinfo=UTC)


def after(
    outcome: Outcome, dials: int = 1, same: int = 1, policy: RetryPolicy | None = None
) -> Decision:
    return decide(
        policy or RetryPolicy(),
        outcome,
        dials=dials,
        same_outcome=same,
        now=NOW,
        next_day_start=lambda _now: TOMORROW_9,
    )


def test_default_delays() -> None:
    assert after(Outcome.BUSY).next_attempt_at == NOW + timedelta(minutes=15)
    assert after(Outcome.NO_ANSWER).next_attempt_at == NOW + timedelta(hours=2)
    assert after(Outcome.VOICEMAIL).next_attempt_at == TOMORROW_9
    assert after(Outcome.FAILED).next_attempt_at == NOW + timedelta(minutes=5)
    assert after(Outcome.BUSY).status == ContactStatus.RETRY


def test_failed_backs_off_exponentially() -> None:
    assert after(Outcome.FAILED, dials=2, same=2).next_attempt_at == NOW + timedelta(minutes=10)
    policy = RetryPolicy(max_attempts=5)
    assert after(Outcome.FAILED, 3, 3, policy).next_attempt_at == NOW + timedelta(minutes=20)


def test_never_retried_outcomes_close_the_contact() -> None:
    assert after(Outcome.ANSWERED).status == ContactStatus.COMPLETED
    assert after(Outcome.DECLINED).status == ContactStatus.DECLINED
    assert after(Outcome.INVALID_NUMBER).status == ContactStatus.INVALID
    assert after(Outcome.DO_NOT_CALL).status == ContactStatus.DNC
    for outcome in (Outcome.ANSWERED, Outcome.DECLINED, Outcome.INVALID_NUMBER):
        assert after(outcome).next_attempt_at is None


def test_at_most_three_attempts_per_contact() -> None:
    assert after(Outcome.BUSY, dials=2, same=2).status == ContactStatus.RETRY
    assert after(Outcome.BUSY, dials=3, same=1).status == ContactStatus.EXHAUSTED
    # A voicemail on the last attempt still reached the mailbox.
    assert after(Outcome.VOICEMAIL, dials=3, same=3).status == ContactStatus.COMPLETED


def test_rule_cap_and_never() -> None:
    policy = RetryPolicy.model_validate(
        {"busy": {"delay": "1m", "max_attempts": 1}, "no_answer": "never", "voicemail": False}
    )
    assert after(Outcome.BUSY, policy=policy).status == ContactStatus.EXHAUSTED
    assert after(Outcome.NO_ANSWER, policy=policy).status == ContactStatus.EXHAUSTED
    assert after(Outcome.VOICEMAIL, policy=policy).status == ContactStatus.COMPLETED


def test_agent_unavailable_does_not_spend_dials() -> None:
    # Three real dials are used up, but no agent is not a dial: it retries on its own cap.
    decision = after(Outcome.AGENT_UNAVAILABLE, dials=3, same=1)
    assert decision.status == ContactStatus.RETRY
    assert decision.next_attempt_at == NOW + timedelta(minutes=1)
    assert after(Outcome.AGENT_UNAVAILABLE, dials=0, same=5).status == ContactStatus.EXHAUSTED


def test_cancelled_is_due_again_now() -> None:
    decision = after(Outcome.CANCELLED, dials=3, same=1)
    assert decision == Decision(ContactStatus.RETRY, NOW)


def test_durations() -> None:
    assert parse_duration(90) == 90.0
    assert parse_duration("1.5") == 1.5
    assert parse_duration("15m") == 900.0
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("2d") == 172800.0
    assert parse_duration("250ms") == 0.25
    for bad in ("soon", "5x", "-1", True, None):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_declined_cannot_be_made_retryable() -> None:
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate({"declined": {"delay": "1h"}})
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate({"bussy": {"delay": "1h"}})


def test_screened_ivr_and_no_speech_have_their_own_rules() -> None:
    # a screener heard who called: once more, another day
    assert after(Outcome.SCREENED) == Decision(ContactStatus.RETRY, TOMORROW_9)
    assert after(Outcome.SCREENED, dials=2, same=2).status == ContactStatus.EXHAUSTED
    # a phone menu is not the contact's own line: not retried
    assert after(Outcome.IVR) == Decision(ContactStatus.EXHAUSTED)
    # nobody spoke: soon, once more
    assert after(Outcome.NO_SPEECH) == Decision(ContactStatus.RETRY, NOW + timedelta(hours=1))
    assert after(Outcome.NO_SPEECH, dials=2, same=2).status == ContactStatus.EXHAUSTED


def test_the_new_rules_are_set_from_yaml_like_any_other() -> None:
    policy = RetryPolicy.model_validate({"ivr": {"delay": "next_day"}, "screened": "never"})
    assert after(Outcome.IVR, policy=policy) == Decision(ContactStatus.RETRY, TOMORROW_9)
    assert after(Outcome.SCREENED, policy=policy) == Decision(ContactStatus.EXHAUSTED)
