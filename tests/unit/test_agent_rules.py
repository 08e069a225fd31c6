"""Pure rules of the agent: vocabulary and dispatch metadata (AMD: test_amd.py)."""

from __future__ import annotations

import logging

import pytest

from agent.assistant import instructions
from agent.local.vocabulary import VOICEMAIL_PHRASES, contains_phrase, corpus, normalize
from agent.worker import parse_dial_request
from campaign.contract import DialRequest, Script

pytestmark = pytest.mark.unit


def test_normalize_keeps_words_and_apostrophes_only() -> None:
    assert normalize("  Hello?  I DON'T -- know, 42!") == "hello i don't know"


@pytest.mark.parametrize(
    ("text", "phrase", "expected"),
    [
        ("yes I am interested", "interested", True),
        ("I am not interested.", "not interested", True),
        ("uninterested", "interested", False),  # whole words only
        ("call me later", "later", True),
        ("", "later", False),
    ],
)
def test_contains_phrase_matches_whole_words(text: str, phrase: str, expected: bool) -> None:
    assert contains_phrase(text, phrase) is expected


def test_the_corpus_holds_the_scripts_words_and_the_voicemail_phrases() -> None:
    script = Script(keywords={"Sign me up!": "interested"}, do_not_call_phrases=["Go away"])
    lines = corpus(script)
    assert "sign me up" in lines
    assert "i am sign me up" in lines
    assert "go away" in lines
    assert set(VOICEMAIL_PHRASES) <= set(lines)
    assert len(lines) == len(set(lines))


def test_a_valid_dial_request_parses() -> None:
    request = DialRequest(campaign="c", contact_id=1, attempt_id=2, phone_masked="+1415***2671")
    assert parse_dial_request(request.model_dump_json()) == request


@pytest.mark.parametrize(
    "metadata",
    ["", "not json", '{"campaign": "c"}', '{"campaign": "c", "contact_id": "x", "attempt_id": 1}'],
)
def test_a_bad_dial_request_is_rejected_with_one_line(
    metadata: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="agent.worker"):
        assert parse_dial_request(metadata) is None
    [record] = caplog.records
    assert record.getMessage().startswith("rejecting job: bad DialRequest in dispatch metadata: ")
    assert "\n" not in record.getMessage()


def test_cloud_instructions_carry_the_script_and_the_dispositions() -> None:
    request = DialRequest(
        campaign="c",
        contact_id=1,
        attempt_id=2,
        phone_masked="+1415***2671",
        name="Ada",
        script=Script(dispositions=["yes", "no"]),
    )
    text = instructions(request)
    assert "Hello Ada, this is an automated call." in text
    assert "one of: yes, no" in text
    assert "end_call" in text and "add_to_do_not_call" in text
