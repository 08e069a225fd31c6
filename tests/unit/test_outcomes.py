"""The one table from SIP final responses to outcomes."""

from __future__ import annotations

import pytest

from campaign.outcomes import (
    AMD_OUTCOMES,
    SIP_STATUS_OUTCOMES,
    AmdResult,
    Outcome,
    outcome_for_call,
    outcome_for_sip_status,
)

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


@pytest.mark.parametrize(
    ("amd_result", "outcome"),
    [
        ("human", Outcome.ANSWERED),
        ("voicemail", Outcome.VOICEMAIL),
        ("machine", Outcome.VOICEMAIL),  # records from before the finer classes
        ("screener", Outcome.SCREENED),
        ("ivr", Outcome.IVR),
        ("silence", Outcome.NO_SPEECH),
        ("uncertain", Outcome.ANSWERED),
        ("not_run", Outcome.ANSWERED),
        (None, Outcome.ANSWERED),
    ],
)
def test_a_call_record_maps_to_one_outcome(amd_result: str | None, outcome: Outcome) -> None:
    assert outcome_for_call(amd_result) is outcome


def test_every_amd_result_has_an_outcome() -> None:
    assert {outcome_for_call(result.value) for result in AmdResult} <= set(Outcome)
    assert set(AMD_OUTCOMES) <= {result.value for result in AmdResult}
