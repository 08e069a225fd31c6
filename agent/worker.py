"""The LiveKit Agents worker: one job per call attempt, dispatched by name.

Run it the framework's way: `python -m agent start` (or `dev`). For each job it
parses the `DialRequest` from the dispatch metadata, starts the session before
the callee answers, runs answering-machine detection (`agent.amd`), then holds
the scripted conversation with a person, leaves the voicemail message after the
beep, tells a call screener who calls and why, hangs up on a phone menu, or
prompts a silent line once, and records the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from functools import lru_cache
from typing import Any

from livekit import rtc
from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, room_io
from livekit.agents.utils.participant import wait_for_participant_attribute
from livekit.agents.voice.events import AgentStateChangedEvent
from livekit.agents.worker import ServerEnvOption
from livekit.plugins import silero
from pydantic import ValidationError

from agent.amd import AnsweringMachineDetector, Verdict
from agent.assistant import Assistant, CallState, HangUp, script_variables
from agent.providers import build_providers, preload_turn_detector
from agent.recorder import CallRecorder, replay_spool, spool_dir
from campaign.config import Settings, get_settings
from campaign.contract import AGENT_HEARTBEAT_ATTR, AGENT_HEARTBEAT_S, DialRequest
from campaign.errors import validation_problems
from campaign.outcomes import AmdResult, EndReason
from campaign.store import Ledger, open_ledger

logger = logging.getLogger(__name__)

READY_MESSAGE = "Agent is ready"
_SIP_CALL_STATUS = "sip.callStatus"
_SIP_ACTIVE = "active"
#: The dialer dials right after the agent joins; a SIP participant that never shows up
#: means the dial was abandoned.
PARTICIPANT_WAIT_S = 120.0
#: Callee silence after the agent spoke before it asks again (or says goodbye).
USER_SILENCE_S = 8.0
#: A mailbox that has not beeped once its greeting has been over this long never will.
NO_BEEP_QUIET_S = 2.0
#: Longest wait for the beep after the verdict: the message is left even if none came.
BEEP_WAIT_MAX_S = 10.0
#: Lines a call screener may say after the agent's answer before a person (or nobody).
SCREENER_TURNS = 2
#: Longest a `dialer doctor` probe job stays in its room.
PROBE_STAY_S = 30.0


def build_server(settings: Settings) -> AgentServer:
    """The agent server, named and sized from settings."""
    max_calls = settings.agent_max_calls

    def calls_load(worker: AgentServer) -> float:
        return len(worker.active_jobs) / max_calls

    server = AgentServer(
        setup_fnc=prewarm,
        # `dev` keeps LiveKit's free port; `start` serves health checks on the set one
        port=ServerEnvOption(dev_default=0, prod_default=settings.agent_http_port),
        # counting calls, LiveKit's own routing (load < 0.7) is the cap: the worker's
        # guess for jobs not yet started would turn a burst of calls away
        load_threshold=math.inf if max_calls else settings.agent_load_threshold,
        load_fnc=calls_load if max_calls else None,  # None: LiveKit's CPU-based load
    )
    server.rtc_session(entrypoint, agent_name=settings.agent_name)

    @server.on("worker_registered")
    def _ready(worker_id: str, _server_info: object) -> None:
        logger.info("%s: %s (worker %s)", READY_MESSAGE, settings.agent_name, worker_id)

    return server


def prewarm(proc: JobProcess) -> None:
    """Per process, before any job: load the VAD and the local turn-detector model."""
    proc.userdata["vad"] = silero.VAD.load()
    preload_turn_detector()


@lru_cache(maxsize=2)
def _ledger(url: str) -> Ledger:
    # the worker's start-up migrated the schema; each job process only connects
    return open_ledger(url, migrate=False)


def parse_dial_request(metadata: str) -> DialRequest | None:
    """The job's `DialRequest`, or None after logging one line on what is wrong."""
    try:
        return DialRequest.model_validate_json(metadata or "")
    except ValidationError as exc:
        problems = "; ".join(
            f"{where or 'metadata'}: {message}" for where, message in validation_problems(exc)
        )
        logger.error("rejecting job: bad DialRequest in dispatch metadata: %s", problems)
        return None


async def entrypoint(ctx: JobContext) -> None:
    request = parse_dial_request(ctx.job.metadata)
    if request is None:
        ctx.shutdown(reason="bad dial request")
        return
    if request.probe:
        await _answer_probe(ctx)
        return
    ctx.log_context_fields = {
        "campaign": request.campaign,
        "contact_id": request.contact_id,
        "attempt_id": request.attempt_id,
        "phone": request.phone_masked,
    }
    settings = get_settings()
    ledger = _ledger(settings.database_url)
    # records that the ledger refused earlier (spooled by a past job) go in first
    with contextlib.suppress(OSError):
        await asyncio.to_thread(replay_spool, ledger, spool_dir())
    call = CallState()
    recorder = CallRecorder(ledger=ledger, request=request, room_name=ctx.room.name, call=call)
    ctx.add_shutdown_callback(recorder.finish)

    def hang_up() -> asyncio.Future[object]:
        """End the call for everyone: deleting the room drops the SIP leg too.

        The job context tracks the deletion, so callers need not await it."""
        return ctx.delete_room()

    try:
        providers = build_providers(
            settings,
            script=request.script,
            variables=script_variables(request),
            vad_model=ctx.proc.userdata["vad"],
        )
        session: AgentSession[Any] = AgentSession(
            stt=providers.stt,
            llm=providers.llm,
            tts=providers.tts,
            vad=providers.vad,
            turn_handling=providers.turn_handling,
        )
        recorder.watch(session)
        session.on(
            "agent_state_changed",
            lambda ev: logger.debug("agent %s -> %s", ev.old_state, ev.new_state),
        )
        session.on(
            "user_state_changed",
            lambda ev: logger.debug("callee %s -> %s", ev.old_state, ev.new_state),
        )
        assistant = Assistant(request=request, call=call, ledger=ledger, hang_up=hang_up)
        # started before the callee answers, so not a word of theirs is lost
        await session.start(
            agent=assistant,
            room=ctx.room,
            room_options=room_io.RoomOptions(
                audio_input=room_io.AudioInputOptions(
                    sample_rate=providers.input_sample_rate,
                    noise_cancellation=providers.noise_cancellation,
                ),
                participant_kinds=[rtc.ParticipantKind.PARTICIPANT_KIND_SIP],
                delete_room_on_close=True,
            ),
        )
        beat = asyncio.ensure_future(_heartbeat(ctx.room))
        ctx.add_shutdown_callback(lambda: _cancel(beat))
        await _run_call(ctx, session, assistant, recorder, request, hang_up)
    except Exception as exc:
        # recorded, then re-raised for the framework to log and end the job
        recorder.fail(exc)
        raise


async def _heartbeat(room: rtc.Room) -> None:
    """Change the heartbeat attribute every few seconds: the dialer hangs up a call whose
    agent stopped beating (the job died), without waiting for LiveKit to drop it."""
    beat = 0
    while True:
        beat += 1
        with contextlib.suppress(Exception):  # a missed beat is only a late one
            await room.local_participant.set_attributes({AGENT_HEARTBEAT_ATTR: str(beat)})
        await asyncio.sleep(AGENT_HEARTBEAT_S)


async def _cancel(task: asyncio.Future[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _answer_probe(ctx: JobContext) -> None:
    """`dialer doctor`'s test dispatch: be seen in the room, then leave; record nothing."""
    await ctx.connect()
    logger.info("probe dispatch from dialer doctor: joined room %s", ctx.room.name)
    closed = asyncio.Event()
    ctx.room.on("disconnected", lambda *_: closed.set())
    # the doctor deletes the room once it saw us; the bound covers a doctor that died
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closed.wait(), timeout=PROBE_STAY_S)
    ctx.shutdown(reason="probe done")


async def _run_call(
    ctx: JobContext,
    session: AgentSession[Any],
    assistant: Assistant,
    recorder: CallRecorder,
    request: DialRequest,
    hang_up: HangUp,
) -> None:
    call = assistant.call
    try:
        participant = await asyncio.wait_for(
            ctx.wait_for_participant(kind=rtc.ParticipantKind.PARTICIPANT_KIND_SIP),
            timeout=PARTICIPANT_WAIT_S,
        )
    except TimeoutError:
        logger.warning("no SIP participant joined within %.0f s; ending", PARTICIPANT_WAIT_S)
        call.end(EndReason.NEVER_ANSWERED)
        await hang_up()
        return
    except RuntimeError:
        logger.info("the room closed before the call was placed")
        call.end(EndReason.NEVER_ANSWERED)
        return

    def _on_disconnected(gone: rtc.RemoteParticipant) -> None:
        if gone.identity == participant.identity:
            recorder.callee_left()
            hang_up()

    ctx.room.on("participant_disconnected", _on_disconnected)

    detector = AnsweringMachineDetector(session)
    detector.listen_to(participant)
    try:
        try:
            await wait_for_participant_attribute(
                ctx.room,
                identity=participant.identity,
                attribute=_SIP_CALL_STATUS,
                value=_SIP_ACTIVE,
            )
        except RuntimeError:
            logger.info("the call ended before it was answered")
            recorder.callee_left()
            return
        recorder.mark_answered()
        logger.info("answered")
        _limit_duration(request, call, hang_up)
        assert call.answered_clock is not None
        detector.start(call.answered_clock)
        verdict = await _judge(session, detector, request, call)
        if verdict.result is AmdResult.HUMAN:
            _prompt_on_silence(session, call)
            greeting = assistant.greet()
            detector.after_transcript(lambda: assistant.hello_heard(greeting))
            return
        if verdict.result is AmdResult.VOICEMAIL:
            await _leave_voicemail(session, detector, request, call, verdict)
        call.end(EndReason.AGENT_HANGUP)
        await hang_up()
    finally:
        await detector.aclose()


async def _judge(
    session: AgentSession[Any],
    detector: AnsweringMachineDetector,
    request: DialRequest,
    call: CallState,
) -> Verdict:
    """The final verdict: silence gets one prompt, a screener hears who calls and why."""
    verdict = await detector.verdict()
    _note_verdict(call, verdict)
    if verdict.result is AmdResult.SILENCE:
        await _say(session, request, request.script.silence_prompt)
        detector.listen_again()
        verdict = await detector.verdict()
        _note_verdict(call, verdict)
    if verdict.result is AmdResult.SCREENER:
        await _say(session, request, request.script.screener_message)
        detector.listen_again()
        # a person who takes the call speaks; the screener itself may add a line
        for _ in range(SCREENER_TURNS):
            after = await detector.verdict()
            if after.result is AmdResult.HUMAN:
                logger.info("a person took the call after the screener")
                _note_verdict(call, after)
                return after
            if after.result is AmdResult.SILENCE:
                break
            detector.listen_again()
    return verdict


def _note_verdict(call: CallState, verdict: Verdict) -> None:
    call.amd_result = verdict.result
    if call.answered_clock is not None:
        call.amd_latency = verdict.at - call.answered_clock
    logger.info(
        "answering machine detection: %s after %.2f s (%s)",
        verdict.result.value,
        call.amd_latency or 0.0,
        verdict.reason,
    )


async def _say(session: AgentSession[Any], request: DialRequest, text: str) -> None:
    """One line, said whole: a screener or a silent line does not take turns."""
    handle = session.say(
        request.script.render(text, script_variables(request)), allow_interruptions=False
    )
    await handle


async def _leave_voicemail(
    session: AgentSession[Any],
    detector: AnsweringMachineDetector,
    request: DialRequest,
    call: CallState,
    verdict: Verdict,
) -> None:
    """After the beep (or, with none, once the greeting is over), the message, once."""
    message = request.script.voicemail_message
    if not message or not verdict.accepts_message:
        return
    beep = await detector.beep_or_quiet(
        after=(call.answered_clock or 0.0), quiet_s=NO_BEEP_QUIET_S, max_wait_s=BEEP_WAIT_MAX_S
    )
    if beep is not None and call.answered_clock is not None:
        call.beep_latency = beep - call.answered_clock
    handle = session.say(
        request.script.render(message, script_variables(request)), allow_interruptions=False
    )
    started = asyncio.Event()

    def _speaking(event: AgentStateChangedEvent) -> None:
        if event.new_state == "speaking" and not started.is_set():
            started.set()
            if call.answered_clock is not None:
                call.message_latency = time.time() - call.answered_clock

    session.on("agent_state_changed", _speaking)
    try:
        await handle
    finally:
        session.off("agent_state_changed", _speaking)
    call.voicemail_left = not handle.interrupted
    logger.info(
        "voicemail message %s (%s)",
        "left" if call.voicemail_left else "cut off",
        "after the beep" if beep is not None else "no beep heard",
    )


def _prompt_on_silence(session: AgentSession[Any], call: CallState) -> None:
    """A callee silent for USER_SILENCE_S after the agent spoke gets the question again,
    then a goodbye (the LLM decides which)."""
    timer: asyncio.TimerHandle | None = None

    def _prompt() -> None:
        if call.end_reason is None and session.agent_state == "listening":
            session.generate_reply(
                instructions="The callee has said nothing. Ask again once, or say goodbye "
                "and end the call."
            )

    def _rearm(*_: object) -> None:
        nonlocal timer
        if timer is not None:
            timer.cancel()
            timer = None
        if session.agent_state == "listening" and session.user_state != "speaking":
            timer = asyncio.get_running_loop().call_later(USER_SILENCE_S, _prompt)

    session.on("agent_state_changed", _rearm)
    session.on("user_state_changed", _rearm)


def _limit_duration(request: DialRequest, call: CallState, hang_up: HangUp) -> None:
    def _expired() -> None:
        logger.info("maximum call duration (%.0f s) reached", request.max_call_duration_s)
        call.end(EndReason.MAX_DURATION)
        hang_up()

    asyncio.get_running_loop().call_later(request.max_call_duration_s, _expired)
