"""The circuit breaker's states, and how a dial that got no SIP answer is read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from campaign.dialer import Breaker, DialerError, PartDown
from campaign.errors import UserError
from campaign.telephony import TelephonyError, _dial_fault

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)


def breaker() -> Breaker:
    return Breaker("LiveKit at x", "waiting for LiveKit", 3, initial=1.0, maximum=8.0)


def test_opens_after_threshold_consecutive_failures() -> None:
    b = breaker()
    b.failure("refused", NOW)
    b.failure("refused", NOW)
    assert not b.tripped
    b.failure("refused", NOW)
    assert b.is_open and b.opened_at == NOW and b.last_error == "refused"


def test_a_success_between_failures_resets_the_count() -> None:
    b = breaker()
    b.failure("x", NOW)
    b.failure("x", NOW)
    b.success()
    b.failure("x", NOW)
    assert not b.tripped


def test_probes_back_off_and_half_open_reopens_at_once() -> None:
    b = breaker()
    for _ in range(3):
        b.failure("x", NOW)
    delays = []
    for _ in range(5):
        b.probe_failed("still down")
        delays.append(b.delay)
    assert delays == [2.0, 4.0, 8.0, 8.0, 8.0]
    b.probe_passed()
    assert b.tripped and not b.is_open  # claims resume
    b.failure("down again", NOW)
    assert b.is_open  # one failure is enough now
    b.probe_passed()
    b.success()
    assert not b.tripped and b.failures == 0


def test_errors_carry_their_exit_codes() -> None:
    assert issubclass(DialerError, UserError) and DialerError("x").exit_code == 1
    assert PartDown("x").exit_code == 5
    error = TelephonyError("x", status=503, retryable=True)
    assert (error.exit_code, error.status, error.retryable, error.sent) == (3, 503, True, True)


def test_a_dial_without_a_sip_answer() -> None:
    rang_out = _dial_fault(TelephonyError("timed out", status=408, retryable=True), "c")
    assert rang_out.status == "final" and rang_out.outcome == "no_answer"
    never_left = _dial_fault(TelephonyError("refused", retryable=True, sent=False), "c")
    assert never_left.status == "not_sent"  # nobody rang: not a dial
    hung = _dial_fault(TelephonyError("no answer within 40 s", retryable=True), "c")
    assert hung.status == "unknown"  # it may be ringing: follow the room
    refused = _dial_fault(TelephonyError("bad trunk", status=400), "c")
    assert refused.status == "final" and refused.outcome == "failed"
