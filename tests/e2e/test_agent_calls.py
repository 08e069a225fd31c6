"""The real agent worker on the devstack: calls placed straight through LiveKit
(room, dispatch, SIP participant) to the sipp phones, checked in the ledger and
in the phones' own log."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from livekit import api

from campaign.contract import Script
from campaign.store import CallRecord, Ledger, open_ledger
from campaign.store.calls import get_call_record
from devstack.phones import Behaviour, Event, number_for, read_log
from tests.e2e.agent_worker import (
    AgentWorker,
    dial_request,
    place_call,
    room_exists,
    seed_attempt,
    start_agent_worker,
    wait_for,
)

pytestmark = pytest.mark.e2e

RECORD_TIMEOUT_S = 120.0
VOICEMAIL = "Hi {name}, this is Acme calling about your order. Please call us back. Goodbye."


@dataclass
class Stack:
    env: dict[str, str]
    ledger: Ledger
    worker: AgentWorker


@pytest.fixture(scope="module")
def stack(
    devstack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    url = f"sqlite:///{tmp_path_factory.mktemp('agent-e2e') / 'ledger.db'}"
    ledger = open_ledger(url)
    with start_agent_worker(database_url=url, env=devstack_env) as worker:
        yield Stack(devstack_env, ledger, worker)
    ledger.dispose()


def fresh_number(behaviour: Behaviour) -> str:
    # the phones answer any index; a random one keeps other sessions' calls out of our log
    return number_for(behaviour, random.randrange(900, 990))


@dataclass
class Placed:
    record: CallRecord
    events: list[Event]
    room: str


def call(stack: Stack, behaviour: Behaviour, script: Script | None = None) -> Placed:
    number = fresh_number(behaviour)
    contact_id, attempt_id = seed_attempt(stack.ledger, number)
    request = dial_request(contact_id, attempt_id, number, script=script)
    room, participant, error = asyncio.run(
        place_call(stack.env, stack.worker.agent_name, request, number)
    )
    assert error is None, f"the call failed: {error}"
    assert participant is not None
    wait_for(
        lambda: get_call_record(stack.ledger, attempt_id) is not None,
        RECORD_TIMEOUT_S,
        "the agent's call record",
    )
    record = get_call_record(stack.ledger, attempt_id)
    assert record is not None
    wait_for(lambda: not asyncio.run(room_exists(stack.env, room)), 30, "the room to be gone")
    events = [e.event for e in read_log(lk_call_id=participant.sip_call_id)]
    return Placed(record, events, room)


def test_the_talking_phone_is_greeted_heard_answered_and_hung_up_on(stack: Stack) -> None:
    placed = call(stack, Behaviour.TALKS)
    record = placed.record
    assert record.amd_result == "human"
    assert record.end_reason == "agent_hangup", record.error
    # pocketsphinx hears "interested" or "call me tomorrow" (or both) in the answer
    assert record.disposition in {"interested", "callback"}
    assert record.answered_at is not None and record.ended_at is not None
    assert record.first_word_latency is not None and 0 < record.first_word_latency < 15
    assert record.transcript is not None
    roles = [m["role"] for m in record.transcript]
    assert roles[0] == "agent" and "callee" in roles and roles[-1] == "agent"
    assert record.transcript[0]["text"].startswith("Hello Sam")
    assert record.transcript[-1]["text"] == Script().goodbye
    assert record.llm_prompt_tokens > 0 and record.llm_completion_tokens > 0
    assert record.tts_characters >= len(Script().goodbye)
    assert record.stt_audio_seconds > 1.0
    answered = [t for t in record.turns if t.user_text]
    assert answered, "no turn answered the callee"
    turn = answered[-1]
    for value in (turn.end_of_turn_delay, turn.transcription_delay, turn.tts_ttfb):
        assert value is not None and value >= 0
    assert turn.llm_ttft is not None and turn.llm_ttft >= 0
    assert turn.total_latency is not None and 0 < turn.total_latency < 10
    # the agent hung up: the phone received the BYE and never sent one
    assert Event.ANSWERED in placed.events
    assert Event.BYE_RECEIVED in placed.events
    assert Event.BYE_SENT not in placed.events


def test_the_answering_machine_gets_the_voicemail_message(stack: Stack) -> None:
    placed = call(stack, Behaviour.ANSWERING_MACHINE, Script(voicemail_message=VOICEMAIL))
    record = placed.record
    assert record.amd_result == "voicemail"
    assert record.voicemail_left
    assert record.end_reason == "agent_hangup"
    assert record.disposition is None
    assert record.transcript is not None
    agent_lines = [m["text"] for m in record.transcript if m["role"] == "agent"]
    assert agent_lines == [VOICEMAIL.replace("{name}", "Sam")]
    assert Event.BYE_RECEIVED in placed.events
    assert Event.BYE_SENT not in placed.events


def test_without_a_voicemail_message_the_machine_is_hung_up_on(stack: Stack) -> None:
    placed = call(stack, Behaviour.ANSWERING_MACHINE, Script(voicemail_message=None))
    record = placed.record
    assert record.amd_result == "voicemail"
    assert not record.voicemail_left
    assert record.end_reason == "agent_hangup"
    assert record.transcript is not None
    assert not [m for m in record.transcript if m["role"] == "agent"]
    assert Event.BYE_RECEIVED in placed.events


def test_a_callee_who_hangs_up_is_recorded_as_such(stack: Stack) -> None:
    placed = call(stack, Behaviour.HANGS_UP)
    record = placed.record
    assert record.end_reason == "callee_hangup"
    assert record.answered_at is not None
    assert Event.BYE_SENT in placed.events
    assert Event.BYE_RECEIVED not in placed.events


def test_a_bad_dispatch_payload_ends_only_that_job(stack: Stack) -> None:
    room = f"agent-test-bad-{uuid.uuid4().hex[:6]}"

    async def dispatch_garbage() -> None:
        async with api.LiveKitAPI(
            stack.env["LIVEKIT_URL"], stack.env["LIVEKIT_API_KEY"], stack.env["LIVEKIT_API_SECRET"]
        ) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=10))
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    agent_name=stack.worker.agent_name, room=room, metadata='{"campaign": 7}'
                )
            )

    asyncio.run(dispatch_garbage())
    wait_for(
        lambda: "rejecting job: bad DialRequest" in stack.worker.output(),
        60,
        "the worker to reject the job",
    )
    line = next(
        line
        for line in stack.worker.output().splitlines()
        if "rejecting job: bad DialRequest" in line
    )
    assert "contact_id" in line and "attempt_id" in line  # names what is missing
    assert stack.worker.process.poll() is None
    # the worker still takes calls
    placed = call(stack, Behaviour.HANGS_UP)
    assert placed.record.end_reason == "callee_hangup"
