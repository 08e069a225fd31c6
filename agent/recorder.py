"""One call record per session: outcome, transcript, usage and per-turn latency.

The recorder watches the session and, when the job shuts down (normally or after
an error), writes what the call established to the ledger through
`campaign.store.calls`. No audio is ever stored.

A write that fails is retried (transient ledger faults, a few seconds); if the ledger
stays away the record is spooled to a local file (`spool_dir()`), and the next job
that starts replays the spool. The dialer applies a record that comes late.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession, llm
from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    CloseEvent,
    CloseReason,
    ErrorEvent,
)
from sqlalchemy.exc import SQLAlchemyError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from agent.assistant import CallState
from campaign.contract import DialRequest
from campaign.outcomes import EndReason
from campaign.store import Ledger, LedgerError, utcnow
from campaign.store.aio import is_transient_ledger_fault
from campaign.store.calls import CallSummary, TurnMetrics, write_call_record

logger = logging.getLogger(__name__)

#: A callee hang-up this close to the limit was the limit (the SIP side enforces it too).
MAX_DURATION_SLACK_S = 2.0
#: tries of the call record's write before it is spooled
WRITE_ATTEMPTS = 5


def spool_dir() -> Path:
    """Where records wait for the ledger: `DIALER_SPOOL_DIR`, else the user's state dir."""
    explicit = os.environ.get("DIALER_SPOOL_DIR")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "dialer" / "call-records"


class CallRecorder:
    """Collects one session's facts and writes its call record once."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        request: DialRequest,
        room_name: str,
        call: CallState,
        spool: Path | None = None,
    ) -> None:
        self._ledger = ledger
        self._spool = spool or spool_dir()
        self._request = request
        self._room_name = room_name
        self._call = call
        self._session: AgentSession[Any] | None = None
        self._first_speech_clock: float | None = None
        self._close_reason: CloseReason | None = None
        self._written = False

    @property
    def call(self) -> CallState:
        return self._call

    def watch(self, session: AgentSession[Any]) -> None:
        """Follow a session's state, errors and close."""
        self._session = session
        session.on("agent_state_changed", self._on_agent_state)
        session.on("error", self._on_error)
        session.on("close", self._on_close)

    def mark_answered(self) -> None:
        """The callee picked up (the SIP call became active)."""
        self._call.answered_at = utcnow()
        self._call.answered_clock = time.time()

    def callee_left(self) -> None:
        """The SIP participant left: a hang-up, or the call hit its duration limit."""
        answered = self._call.answered_clock
        if answered is None:
            self._call.end(EndReason.NEVER_ANSWERED)
        elif time.time() - answered >= self._request.max_call_duration_s - MAX_DURATION_SLACK_S:
            self._call.end(EndReason.MAX_DURATION)
        else:
            self._call.end(EndReason.CALLEE_HANGUP)

    def fail(self, error: BaseException | str) -> None:
        """The session failed; the record keeps a one-line reason."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._call.error = self._call.error or text.splitlines()[0][:500]
        self._call.end(EndReason.ERROR)

    def _on_agent_state(self, event: AgentStateChangedEvent) -> None:
        if (
            event.new_state == "speaking"
            and self._first_speech_clock is None
            and self._call.answered_clock is not None
        ):
            self._first_speech_clock = time.time()

    def _on_error(self, event: ErrorEvent) -> None:
        if not getattr(event.error, "recoverable", True):
            self.fail(f"{type(event.error).__name__}: {getattr(event.error, 'error', event.error)}")

    def _on_close(self, event: CloseEvent) -> None:
        self._close_reason = event.reason
        if event.reason is CloseReason.ERROR:
            self.fail(str(event.error.error) if event.error else "session closed on an error")

    def summary(self) -> CallSummary:
        """The call record as of now."""
        call = self._call
        keep_text = self._request.store_transcripts
        history = self._session.history if self._session is not None else llm.ChatContext()
        usage = self._session.usage.model_usage if self._session is not None else []
        first_word = (
            self._first_speech_clock - call.answered_clock
            if self._first_speech_clock is not None and call.answered_clock is not None
            else None
        )
        if call.end_reason is None and call.answered_at is None:
            call.end(EndReason.NEVER_ANSWERED)
        return CallSummary(
            attempt_id=self._request.attempt_id,
            room_name=self._room_name,
            answered_at=call.answered_at,
            ended_at=utcnow(),
            # answered, nobody hung up on purpose and no error: the line went away
            end_reason=(call.end_reason or EndReason.CALLEE_HANGUP).value,
            amd_result=call.amd_result.value,
            disposition=call.disposition,
            disposition_note=call.disposition_note,
            callback_at=call.callback_at,
            voicemail_left=call.voicemail_left,
            amd_latency=call.amd_latency,
            beep_latency=call.beep_latency,
            message_latency=call.message_latency,
            added_to_dnc=call.added_to_dnc,
            transcript=transcript(history) if keep_text else None,
            llm_prompt_tokens=sum(u.input_tokens for u in usage if isinstance(u, LLMModelUsage)),
            llm_completion_tokens=sum(
                u.output_tokens for u in usage if isinstance(u, LLMModelUsage)
            ),
            tts_characters=sum(u.characters_count for u in usage if isinstance(u, TTSModelUsage)),
            stt_audio_seconds=sum(u.audio_duration for u in usage if isinstance(u, STTModelUsage)),
            first_word_latency=first_word,
            error=call.error,
            turns=turns(history, keep_text=keep_text),
        )

    async def finish(self, reason: str = "") -> None:
        """Write the call record (once), retrying; spool it if the ledger stays away.
        Used as the job's shutdown callback."""
        if self._written:
            return
        summary = self.summary()
        try:
            await write_with_retry(self._ledger, summary)
        except (SQLAlchemyError, LedgerError) as exc:
            path = spool_record(self._spool, summary)
            self._written = True
            logger.error(
                "could not write the call record (%s); spooled to %s",
                str(exc).splitlines()[0],
                path,
            )
            return
        self._written = True
        logger.info(
            "call recorded: %s, amd %s, disposition %s, %d turns",
            summary.end_reason,
            summary.amd_result,
            summary.disposition,
            len(summary.turns),
        )


async def write_with_retry(ledger: Ledger, summary: CallSummary) -> None:
    """`write_call_record`, retried on transient ledger faults (a few seconds in all)."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient_ledger_fault),
        stop=stop_after_attempt(WRITE_ATTEMPTS),
        wait=wait_exponential(multiplier=0.2, max=2.0),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await asyncio.to_thread(write_call_record, ledger, summary)


def spool_record(folder: Path, summary: CallSummary) -> Path:
    """Save a record the ledger refused as one JSON file (written whole, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(summary)
    path = folder / f"attempt-{summary.attempt_id}-{uuid.uuid4().hex[:8]}.json"
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(data, default=_iso))
    partial.replace(path)
    return path


def replay_spool(ledger: Ledger, folder: Path) -> int:
    """Write every spooled record to the ledger (oldest first); returns how many.

    Each file is claimed by renaming it first, so two jobs starting together never
    write one record twice; a file the ledger still refuses goes back for next time.
    """
    if not folder.is_dir():
        return 0
    done = 0
    for path in sorted(folder.glob("attempt-*.json"), key=lambda p: p.stat().st_mtime):
        claimed = path.with_suffix(f".replaying-{os.getpid()}")
        try:
            path.rename(claimed)
        except FileNotFoundError:  # another job took it
            continue
        try:
            write_call_record(ledger, _summary_from(json.loads(claimed.read_text())))
        except (SQLAlchemyError, LedgerError) as exc:
            claimed.rename(path)
            logger.warning("spooled record %s not replayed yet: %s", path.name, exc)
            break
        claimed.unlink()
        done += 1
    if done:
        logger.info("replayed %d spooled call record(s)", done)
    return done


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool {type(value).__name__}")


def _summary_from(data: dict[str, Any]) -> CallSummary:
    for key in ("answered_at", "ended_at"):
        if data.get(key):
            data[key] = datetime.fromisoformat(data[key])
    data["turns"] = [TurnMetrics(**turn) for turn in data.get("turns", [])]
    return CallSummary(**data)


def transcript(history: llm.ChatContext) -> list[dict[str, object]]:
    """What was said, in order: who, the words, when, and whether it was cut off."""
    return [
        {
            "role": "agent" if item.role == "assistant" else "callee",
            "text": item.text_content or "",
            "at": datetime.fromtimestamp(item.created_at, UTC).isoformat(),
            "interrupted": item.interrupted,
        }
        for item in history.items
        if item.type == "message" and item.role in ("user", "assistant")
    ]


def turns(history: llm.ChatContext, *, keep_text: bool) -> list[TurnMetrics]:
    """One row per agent message, paired with the callee's words it answered."""
    rows: list[TurnMetrics] = []
    pending_user: llm.ChatMessage | None = None
    for item in history.items:
        if item.type != "message":
            continue
        if item.role == "user":
            pending_user = item
        elif item.role == "assistant":
            user_metrics = pending_user.metrics if pending_user is not None else {}
            metrics = item.metrics
            rows.append(
                TurnMetrics(
                    user_text=(pending_user.text_content if pending_user and keep_text else None),
                    agent_text=item.text_content if keep_text else None,
                    end_of_turn_delay=user_metrics.get("end_of_turn_delay"),
                    transcription_delay=user_metrics.get("transcription_delay"),
                    llm_ttft=metrics.get("llm_node_ttft"),
                    tts_ttfb=metrics.get("tts_node_ttfb"),
                    total_latency=metrics.get("e2e_latency"),
                )
            )
            pending_user = None
    return rows
