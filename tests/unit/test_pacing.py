"""The token bucket that paces dials, on a fake clock."""

from __future__ import annotations

import itertools

import pytest

from campaign.pacing import PacingError, TokenBucket

pytestmark = pytest.mark.unit


def run(bucket: TokenBucket, seconds: float, step: float = 0.01) -> list[float]:
    """Take tokens greedily on a fake clock; returns the times they were taken."""
    taken, now = [], 0.0
    while now < seconds:
        if bucket.try_take(now):
            taken.append(now)
        now = round(now + step, 6)
    return taken


def test_rate_holds_over_a_minute() -> None:
    taken = run(TokenBucket(rate=2.0), 60.0)
    assert len(taken) == 120
    gaps = [b - a for a, b in itertools.pairwise(taken)]
    assert min(gaps) == pytest.approx(0.5)


def test_fractional_rate() -> None:
    taken = run(TokenBucket(rate=0.5), 60.0)
    assert len(taken) == 30
    assert taken[:3] == [0.0, 2.0, 4.0]


def test_burst_allows_saved_tokens_then_the_rate() -> None:
    bucket = TokenBucket(rate=1.0, burst=3.0)
    assert [bucket.try_take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time(0.0) == pytest.approx(1.0)
    assert bucket.try_take(1.0)
    assert not bucket.try_take(1.5)


def test_idle_time_does_not_bank_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=1.0)
    assert bucket.try_take(0.0)
    assert bucket.try_take(100.0)
    assert not bucket.try_take(100.5)
    assert bucket.wait_time(100.5) == pytest.approx(0.5)


def test_state_is_one_number_that_round_trips() -> None:
    # The ledger stores `tat`; a second process restoring it sees the same bucket.
    first = TokenBucket(rate=4.0)
    assert first.try_take(10.0)
    second = TokenBucket(rate=4.0, tat=first.tat)
    assert not second.try_take(10.1)
    assert second.try_take(10.25)


def test_bad_rates() -> None:
    with pytest.raises(PacingError):
        TokenBucket(rate=0)
    with pytest.raises(PacingError):
        TokenBucket(rate=float("inf"))
    with pytest.raises(PacingError):
        TokenBucket(rate=1.0, burst=0.5)
