"""The assistant in text mode: the scripted LLM drives real tools against a real ledger.

`session.run(user_input=...)` goes through the framework's own pipeline (LLM node,
tool execution, tool replies), so these check the script, the tools, DNC and the
call record without audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from livekit.agents import AgentSession
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.run_result import RunResult

from agent.assistant import Assistant, CallState, script_variables
from agent.local import ScriptedLLM
from agent.local.llm import REASK_PREFIX
from agent.recorder import CallRecorder
from campaign.contract import DialRequest, Script
from campaign.outcomes import EndReason
from campaign.store import Attempt, Campaign, Contact, Ledger, open_ledger
from campaign.store.calls import get_call_record, is_on_dnc

pytestmark = pytest.mark.integration

NUMBER = "+14155552671"
TIMEOUT_S = 10


@dataclass
class Call:
    session: AgentSession[None]
    assistant: Assistant
    state: CallState
    recorder: CallRecorder
    ledger: Ledger
    request: DialRequest
    hung_up: asyncio.Event


def seed(ledger: Ledger) -> tuple[int, int]:
    with ledger.session() as session:
        campaign = Campaign(name="spring")
        contact = Contact(campaign=campaign, e164=NUMBER, name="Sam")
        session.add_all([campaign, contact])
        session.flush()
        attempt = Attempt(campaign_id=campaign.id, contact_id=contact.id, number=1)
        session.add(attempt)
        session.flush()
        return contact.id, attempt.id


async def open_call(
    url: str, script: Script | None = None, *, store_transcripts: bool = True
) -> AsyncIterator[Call]:
    ledger = open_ledger(url)
    contact_id, attempt_id = seed(ledger)
    request = DialRequest(
        campaign="spring",
        contact_id=contact_id,
        attempt_id=attempt_id,
        phone_masked="+1415***2671",
        name="Sam",
        script=script or Script(),
        store_transcripts=store_transcripts,
    )
    state = CallState()
    hung_up = asyncio.Event()

    async def hang_up() -> None:
        hung_up.set()

    llm = ScriptedLLM(script=request.script, variables=script_variables(request))
    async with llm, AgentSession[None](llm=llm) as session:
        recorder = CallRecorder(ledger=ledger, request=request, room_name="room", call=state)
        recorder.watch(session)
        assistant = Assistant(request=request, call=state, ledger=ledger, hang_up=hang_up)
        await session.start(assistant)
        recorder.mark_answered()
        yield Call(session, assistant, state, recorder, ledger, request, hung_up)
    ledger.dispose()


# the session must live on the test's own event loop
@pytest_asyncio.fixture(loop_scope="function")
async def call(sqlite_ledger_url: str) -> AsyncIterator[Call]:
    async for opened in open_call(sqlite_ledger_url):
        yield opened


async def _done(handle: SpeechHandle) -> None:
    await handle


async def greet(call: Call) -> str:
    handle = call.assistant.greet()
    await asyncio.wait_for(asyncio.ensure_future(_done(handle)), TIMEOUT_S)
    said = [m for m in call.session.history.messages() if m.role == "assistant"]
    assert said, "the agent said nothing"
    return said[-1].text_content or ""


async def test_greeting_renders_the_script_with_the_contact_name(call: Call) -> None:
    greeting = await greet(call)
    assert greeting.startswith("Hello Sam, this is an automated call.")
    assert greeting.endswith(Script().question)


async def test_interested_sets_the_disposition_says_goodbye_and_hangs_up(call: Call) -> None:
    await greet(call)
    result: RunResult[None] = await asyncio.wait_for(
        call.session.run(user_input="Yes, I am interested."), TIMEOUT_S
    )
    result.expect.next_event().is_function_call(
        name="set_disposition", arguments={"disposition": "interested"}
    )
    result.expect.next_event().is_function_call_output()
    result.expect.next_event().is_message(role="assistant")
    result.expect.next_event().is_function_call(name="end_call")
    result.expect.next_event().is_function_call_output()
    result.expect.no_more_events()
    assert call.state.disposition == "interested"
    assert call.state.end_reason is EndReason.AGENT_HANGUP
    assert call.hung_up.is_set()


async def test_not_interested_wins_over_interested(call: Call) -> None:
    await greet(call)
    result: RunResult[None] = await asyncio.wait_for(
        call.session.run(user_input="No thanks, I am not interested"), TIMEOUT_S
    )
    result.expect.next_event().is_function_call(
        name="set_disposition", arguments={"disposition": "not_interested"}
    )
    assert call.state.disposition == "not_interested"


async def test_callback_keeps_the_time_asked_for(call: Call) -> None:
    await greet(call)
    result: RunResult[None] = await asyncio.wait_for(
        call.session.run(user_input="I'm busy, call me tomorrow"), TIMEOUT_S
    )
    result.expect.next_event().is_function_call(
        name="set_disposition", arguments={"disposition": "callback", "callback_at": "tomorrow"}
    )
    assert (call.state.disposition, call.state.callback_at) == ("callback", "tomorrow")


async def test_do_not_call_is_written_to_the_ledger_at_once(call: Call) -> None:
    await greet(call)
    assert not is_on_dnc(call.ledger, NUMBER)
    result: RunResult[None] = await asyncio.wait_for(
        call.session.run(user_input="Please stop calling me, do not call this number"),
        TIMEOUT_S,
    )
    result.expect.next_event().is_message(role="assistant")
    result.expect.next_event().is_function_call(name="add_to_do_not_call")
    result.expect.next_event().is_function_call_output()
    assert is_on_dnc(call.ledger, NUMBER)
    assert call.state.added_to_dnc
    assert call.hung_up.is_set()


async def test_an_unclear_answer_gets_the_question_again_then_goodbye(call: Call) -> None:
    await greet(call)
    first: RunResult[None] = await asyncio.wait_for(call.session.run(user_input="what?"), TIMEOUT_S)
    first.expect.next_event().is_message(role="assistant")
    first.expect.no_more_events()
    reask = call.session.history.messages()[-1].text_content or ""
    assert reask.startswith(REASK_PREFIX)
    second: RunResult[None] = await asyncio.wait_for(call.session.run(user_input="hmm"), TIMEOUT_S)
    second.expect.next_event().is_message(role="assistant")
    second.expect.next_event().is_function_call(name="end_call")
    assert call.state.disposition is None
    assert call.hung_up.is_set()


async def test_a_disposition_the_campaign_does_not_define_is_refused(
    sqlite_ledger_url: str,
) -> None:
    # the keyword points at a value missing from the campaign's dispositions
    script = Script(keywords={"maybe": "undecided"}, dispositions=["interested"])
    async for call in open_call(sqlite_ledger_url, script):
        await greet(call)
        result: RunResult[None] = await asyncio.wait_for(
            call.session.run(user_input="maybe"), TIMEOUT_S
        )
        result.expect.next_event().is_function_call(name="set_disposition")
        result.expect.next_event().is_function_call_output(is_error=True)
        assert call.state.disposition is None


async def test_the_call_record_holds_outcome_transcript_usage_and_turns(call: Call) -> None:
    await greet(call)
    await asyncio.wait_for(call.session.run(user_input="Yes, I am interested."), TIMEOUT_S)
    await call.recorder.finish()

    record = get_call_record(call.ledger, call.request.attempt_id)
    assert record is not None
    assert record.end_reason == "agent_hangup"
    assert record.disposition == "interested"
    assert record.amd_result == "not_run"
    assert record.answered_at is not None and record.ended_at is not None
    assert record.ended_at >= record.answered_at
    assert record.transcript is not None
    assert [m["role"] for m in record.transcript] == ["agent", "callee", "agent"]
    assert record.transcript[1]["text"] == "Yes, I am interested."
    assert record.llm_prompt_tokens > 0 and record.llm_completion_tokens > 0
    assert [t.agent_text for t in record.turns][-1] == Script().goodbye
    assert record.turns[-1].user_text == "Yes, I am interested."
    assert all(t.llm_ttft is not None and t.llm_ttft >= 0 for t in record.turns)


async def test_no_transcript_is_kept_when_the_campaign_says_so(sqlite_ledger_url: str) -> None:
    async for call in open_call(sqlite_ledger_url, store_transcripts=False):
        await greet(call)
        await asyncio.wait_for(call.session.run(user_input="not interested"), TIMEOUT_S)
        await call.recorder.finish()
        record = get_call_record(call.ledger, call.request.attempt_id)
        assert record is not None
        assert record.disposition == "not_interested"
        assert record.transcript is None
        assert record.turns
        assert all(t.user_text is None and t.agent_text is None for t in record.turns)


async def test_a_failed_session_is_still_recorded_with_its_error(call: Call) -> None:
    call.recorder.fail(RuntimeError("tts exploded\nwith details"))
    await call.recorder.finish()
    record = get_call_record(call.ledger, call.request.attempt_id)
    assert record is not None
    assert record.end_reason == "error"
    assert record.error == "RuntimeError: tts exploded"


async def test_the_record_is_written_once(call: Call) -> None:
    await call.recorder.finish()
    call.state.disposition = "interested"
    await call.recorder.finish()
    record = get_call_record(call.ledger, call.request.attempt_id)
    assert record is not None and record.disposition is None
