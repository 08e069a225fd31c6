"""The one table from SIP final responses to outcomes."""

from __future__ import annotations

import pytest

from campaign.outcomes import SIP_STATUS_OUTCOMES, Outcome, outcome_for_sip_status

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (486, Outcome.BUSY),
        (600, Outcome.BUSY),
        (408, Outcome.NO_ANSWER),
        (480, Outcome.NO_ANSWER),
        (487, Outcome.NO_ANSWER),
        (603, Outcome.DECLINED),
        (404, Outcome.INVALID_NUMBER),
        (410, Outcome.INVALID_NUMBER),
        (484, Outcome.INVALID_NUMBER),
        (604, Outcome.INVALID_NUMBER),
        (500, Outcome.FAILED),
        (503, Outcome.FAILED),
        (403, Outcome.FAILED),
        (None, Outcome.FAILED),
    ],
)
def test_sip_status_maps_to_outcome(code: int | None, outcome: Outcome) -> None:
    assert outcome_for_sip_status(code) == outcome


def test_table_holds_only_final_failure_responses() -> None:
    assert all(400 <= code < 700 for code in SIP_STATUS_OUTCOMES)
    assert Outcome.ANSWERED not in SIP_STATUS_OUTCOMES.values()
