"""What the agent writes: the call record with its turns, and do-not-call entries.

The agent worker calls these from its own process; each is one short transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from campaign.outcomes import NO_CALL_RECORD, AttemptStatus, ContactStatus
from campaign.store.db import Ledger, LedgerError
from campaign.store.models import Attempt, CallRecord, Contact, DncEntry, Turn, utcnow


@dataclass(frozen=True)
class TurnMetrics:
    """One agent response and what it cost in time (seconds; None when not measured)."""

    user_text: str | None
    agent_text: str | None
    end_of_turn_delay: float | None = None
    transcription_delay: float | None = None
    llm_ttft: float | None = None
    tts_ttfb: float | None = None
    total_latency: float | None = None


@dataclass(frozen=True)
class CallSummary:
    """Everything the agent knows about one call when its session ends."""

    attempt_id: int
    room_name: str
    answered_at: datetime | None
    ended_at: datetime
    end_reason: str
    amd_result: str
    disposition: str | None = None
    disposition_note: str | None = None
    callback_at: str | None = None
    voicemail_left: bool = False
    #: seconds after the answer: AMD's verdict, the end of the beep, the message's start
    amd_latency: float | None = None
    beep_latency: float | None = None
    message_latency: float | None = None
    added_to_dnc: bool = False
    #: None when the campaign does not store transcripts
    transcript: list[dict[str, Any]] | None = None
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    tts_characters: int = 0
    stt_audio_seconds: float = 0.0
    first_word_latency: float | None = None
    error: str | None = None
    turns: list[TurnMetrics] = field(default_factory=list)


def write_call_record(ledger: Ledger, summary: CallSummary) -> int:
    """Insert (or replace) the call record of an attempt with its turns; returns its id.

    Replacing keeps a re-delivered job from failing on the unique attempt id.
    """
    with ledger.session() as session:
        existing = session.scalar(
            select(CallRecord).where(CallRecord.attempt_id == summary.attempt_id)
        )
        if existing is not None:
            session.delete(existing)
            session.flush()
        record = CallRecord(
            attempt_id=summary.attempt_id,
            room_name=summary.room_name,
            answered_at=summary.answered_at,
            ended_at=summary.ended_at,
            end_reason=summary.end_reason,
            amd_result=summary.amd_result,
            disposition=summary.disposition,
            disposition_note=summary.disposition_note,
            callback_at=summary.callback_at,
            voicemail_left=summary.voicemail_left,
            amd_latency=summary.amd_latency,
            beep_latency=summary.beep_latency,
            message_latency=summary.message_latency,
            added_to_dnc=summary.added_to_dnc,
            transcript=summary.transcript,
            llm_prompt_tokens=summary.llm_prompt_tokens,
            llm_completion_tokens=summary.llm_completion_tokens,
            tts_characters=summary.tts_characters,
            stt_audio_seconds=summary.stt_audio_seconds,
            first_word_latency=summary.first_word_latency,
            error=summary.error,
        )
        record.turns = [
            Turn(
                index=index,
                user_text=turn.user_text,
                agent_text=turn.agent_text,
                end_of_turn_delay=turn.end_of_turn_delay,
                transcription_delay=turn.transcription_delay,
                llm_ttft=turn.llm_ttft,
                tts_ttfb=turn.tts_ttfb,
                total_latency=turn.total_latency,
            )
            for index, turn in enumerate(summary.turns)
        ]
        session.add(record)
        session.flush()
        _apply_late(session, summary)
        return record.id


def _apply_late(session: Session, summary: CallSummary) -> None:
    """A record that came after the dialer finalised the attempt (it waits a short grace,
    and a spooled record is replayed later) still applies what only the agent knows: the
    answer time, the disposition, and a do-not-call request."""
    attempt = session.get(Attempt, summary.attempt_id)
    if attempt is None or attempt.status != AttemptStatus.DONE.value:
        return
    if attempt.error == NO_CALL_RECORD:
        attempt.error = None  # it has one now
    if attempt.answered_at is None and summary.answered_at is not None:
        attempt.answered_at = summary.answered_at
    contact = session.get(Contact, attempt.contact_id)
    if contact is None:
        return
    if summary.disposition:
        contact.disposition = summary.disposition
    if summary.added_to_dnc:
        if session.get(DncEntry, contact.e164) is None:
            session.add(DncEntry(e164=contact.e164, source="agent", note="asked on a call"))
        contact.status, contact.next_attempt_at = ContactStatus.DNC.value, None


def get_call_record(ledger: Ledger, attempt_id: int) -> CallRecord | None:
    """The call record of an attempt with its turns loaded, or None."""
    with ledger.session() as session:
        return session.scalar(
            select(CallRecord)
            .where(CallRecord.attempt_id == attempt_id)
            .options(selectinload(CallRecord.turns))
        )


def add_contact_to_dnc(ledger: Ledger, contact_id: int, *, note: str | None = None) -> str:
    """Put a contact's number on the do-not-call list now; returns the number.

    Idempotent: a number already listed keeps its first entry.
    """
    with ledger.session() as session:
        contact = session.get(Contact, contact_id)
        if contact is None:
            raise LedgerError(f"contact {contact_id} is not in the ledger")
        if session.get(DncEntry, contact.e164) is None:
            session.add(DncEntry(e164=contact.e164, source="agent", note=note, added_at=utcnow()))
        return contact.e164


def is_on_dnc(ledger: Ledger, e164: str) -> bool:
    """Whether a number is on the do-not-call list."""
    with ledger.session() as session:
        return session.get(DncEntry, e164) is not None
