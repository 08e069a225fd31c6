"""Answering-machine detection on the devstack: one corpus clip of each class, played by
the corpus phones to the real agent worker, checked in the call record against the
clip's labels and the phones' own log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from campaign.contract import Script
from campaign.outcomes import Outcome, outcome_for_call
from campaign.store import CallRecord, Ledger, open_ledger
from campaign.store.calls import get_call_record
from devstack import corpus, corpus_phones, stack
from tests.e2e.agent_worker import (
    AgentWorker,
    dial_request,
    place_call,
    seed_attempt,
    start_agent_worker,
    wait_for,
)

pytestmark = pytest.mark.e2e

RECORD_TIMEOUT_S = 120.0
VOICEMAIL = "Hi {name}, this is Acme calling about your order. Please call us back. Goodbye."
SCRIPT = Script(voicemail_message=VOICEMAIL)
#: how much later than the phone sent it the agent may hear the end of the beep (the
#: audio path: sipp, livekit-sip, LiveKit, the agent's jitter buffer, on a busy machine)
BEEP_PATH_MAX_S = 1.0


@dataclass
class Stack:
    env: dict[str, str]
    ledger: Ledger
    worker: AgentWorker
    trunk_id: str
    labels: list[corpus.Label]


@pytest.fixture(scope="module")
def amd_stack(
    devstack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    url = f"sqlite:///{tmp_path_factory.mktemp('amd-e2e') / 'ledger.db'}"
    ledger = open_ledger(url)
    labels = corpus.read_labels(corpus_phones.source())
    with start_agent_worker(database_url=url, env=devstack_env) as worker:
        yield Stack(devstack_env, ledger, worker, stack.ensure_corpus_trunk(), labels)
    ledger.dispose()


@dataclass
class Placed:
    record: CallRecord
    label: corpus.Label
    answered_at: float  #: the phone's 200 OK was ACKed: the clip starts (epoch seconds)
    agent_lines: list[str]


def play(amd: Stack, label: str, *, with_beep: bool = False) -> Placed:
    """Call the phone that plays the first clip of class `label` in the corpus.

    These tests check what the agent does with each class on one fixed clip; how often
    it tells the classes apart over the whole corpus is benchmarks/amd.py's measure."""
    choices = [
        (i, lab)
        for i, lab in enumerate(amd.labels, start=1)
        if lab.label == label and (not with_beep or lab.beep_end is not None)
    ]
    index, clip = choices[0]
    number = corpus.number_for_clip(index)
    contact_id, attempt_id = seed_attempt(amd.ledger, number)
    request = dial_request(contact_id, attempt_id, number, script=SCRIPT)
    _, participant, error = asyncio.run(
        place_call(amd.env, amd.worker.agent_name, request, number, trunk_id=amd.trunk_id)
    )
    assert error is None and participant is not None, f"the call failed: {error}"
    wait_for(
        lambda: get_call_record(amd.ledger, attempt_id) is not None,
        RECORD_TIMEOUT_S,
        "the agent's call record",
    )
    record = get_call_record(amd.ledger, attempt_id)
    assert record is not None and record.transcript is not None
    [answered] = [
        e.timestamp
        for e in corpus_phones.read_log(lk_call_id=participant.sip_call_id)
        if e.event == "answered"
    ]
    lines = [str(m["text"]) for m in record.transcript if m["role"] == "agent"]
    return Placed(record, clip, answered, lines)


def test_a_person_is_greeted_at_once(amd_stack: Stack) -> None:
    placed = play(amd_stack, "human")
    record = placed.record
    assert outcome_for_call(record.amd_result) is Outcome.ANSWERED, placed.label
    assert placed.agent_lines and placed.agent_lines[0].startswith("Hello Sam")
    assert record.first_word_latency is not None and record.amd_latency is not None
    # the agent spoke after the callee's hello ended, not over it
    assert placed.label.speech_end is not None
    assert record.first_word_latency > placed.label.speech_end


def test_the_voicemail_message_starts_after_the_beep(amd_stack: Stack) -> None:
    placed = play(amd_stack, "voicemail", with_beep=True)
    record, label = placed.record, placed.label
    assert outcome_for_call(record.amd_result) is Outcome.VOICEMAIL, label
    assert placed.agent_lines == [VOICEMAIL.replace("{name}", "Sam")]
    assert record.voicemail_left and record.end_reason == "agent_hangup"
    assert label.beep_end is not None and record.answered_at is not None
    assert record.beep_latency is not None and record.message_latency is not None
    # on one clock: the clip's beep ends label.beep_end after the phone's answer
    beep_end = placed.answered_at + label.beep_end
    agent_answered = record.answered_at.timestamp()
    heard = agent_answered + record.beep_latency
    assert beep_end - 0.1 <= heard <= beep_end + BEEP_PATH_MAX_S
    assert agent_answered + record.message_latency > heard


def test_a_screener_hears_who_calls_and_why_then_the_call_ends(amd_stack: Stack) -> None:
    placed = play(amd_stack, "screener")
    record = placed.record
    assert outcome_for_call(record.amd_result) is Outcome.SCREENED, placed.label
    assert placed.agent_lines == [SCRIPT.render(SCRIPT.screener_message, {"name": "Sam"})]
    assert record.end_reason == "agent_hangup"


def test_a_phone_menu_is_hung_up_on_without_a_word(amd_stack: Stack) -> None:
    placed = play(amd_stack, "ivr")
    record = placed.record
    assert outcome_for_call(record.amd_result) is Outcome.IVR, placed.label
    assert placed.agent_lines == []
    assert record.end_reason == "agent_hangup"


def test_a_silent_line_gets_one_prompt_then_no_speech(amd_stack: Stack) -> None:
    placed = play(amd_stack, "silence")
    record = placed.record
    assert outcome_for_call(record.amd_result) is Outcome.NO_SPEECH
    assert placed.agent_lines == [SCRIPT.silence_prompt]
    assert record.end_reason == "agent_hangup"
