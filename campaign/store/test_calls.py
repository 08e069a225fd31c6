"""Ledger queries for `dialer call`: a test call's rows, and what it came to.

A test call gets a contact of its own (`is_test`, never claimed by a campaign run,
left out of the campaign's counts and workbook) and an attempt written exactly as
a claim writes one, so the engine's one-call path and the agent treat it like any
other attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from campaign.store.db import Ledger
from campaign.store.dialing import Claimed, _serialise, new_attempt
from campaign.store.models import Attempt, CallRecord, Contact


@dataclass(frozen=True)
class TurnLatency:
    """One agent response's latency figures (seconds; None when not measured)."""

    end_of_turn_delay: float | None
    transcription_delay: float | None
    llm_ttft: float | None
    tts_ttfb: float | None
    total_latency: float | None


@dataclass(frozen=True)
class CallResult:
    """A finished test call: the attempt as the engine closed it, and the agent's record."""

    attempt_id: int
    room_name: str
    outcome: str | None
    sip_status_code: int | None
    sip_status: str | None
    error: str | None
    claimed_at: datetime
    dial_started_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    has_record: bool = False
    disposition: str | None = None
    amd_result: str | None = None
    end_reason: str | None = None
    first_word_latency: float | None = None
    turns: list[TurnLatency] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        """Connected seconds, answer to hang-up (None when nobody answered)."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.answered_at).total_seconds()


def start_test_call(
    ledger: Ledger,
    campaign_id: int,
    *,
    campaign_name: str,
    e164: str,
    raw: str,
    extension: str | None,
    name: str | None,
    variables: dict[str, str],
    timezones: list[str],
    dialer_id: str,
    now: datetime,
) -> Claimed:
    """The test contact (reused per number) and a `dialing` attempt, as a claim writes them."""
    with ledger.session() as session:
        _serialise(session)
        contact = session.scalar(
            select(Contact).where(
                Contact.campaign_id == campaign_id,
                Contact.e164 == e164,
                Contact.is_test.is_(True),
            )
        )
        if contact is None:
            contact = Contact(
                campaign_id=campaign_id, e164=e164, is_test=True, source="dialer call"
            )
            session.add(contact)
        contact.raw_phone = raw
        contact.extension = extension
        contact.name = name
        contact.variables = dict(variables)
        contact.timezones = list(timezones)
        session.flush()
        attempt = new_attempt(
            session,
            contact.id,
            campaign_id,
            campaign_name=campaign_name,
            dialer_id=dialer_id,
            is_test=True,
            now=now,
        )
        return Claimed(
            attempt_id=attempt.id,
            number=attempt.number,
            contact_id=contact.id,
            e164=e164,
            extension=extension,
            name=name,
            variables=dict(variables),
            timezones=list(timezones),
            room_name=attempt.room_name,
            is_test=True,
        )


def call_result(ledger: Ledger, attempt_id: int) -> CallResult:
    """The attempt and the agent's call record with its turns."""
    with ledger.session() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None:
            raise LookupError(f"attempt {attempt_id} is not in the ledger")
        record = session.scalar(
            select(CallRecord)
            .where(CallRecord.attempt_id == attempt_id)
            .options(selectinload(CallRecord.turns))
        )
        base: dict[str, Any] = {
            "attempt_id": attempt.id,
            "room_name": attempt.room_name,
            "outcome": attempt.outcome,
            "sip_status_code": attempt.sip_status_code,
            "sip_status": attempt.sip_status,
            "error": attempt.error,
            "claimed_at": attempt.claimed_at,
            "dial_started_at": attempt.dial_started_at,
            "answered_at": attempt.answered_at,
            "ended_at": attempt.ended_at,
        }
        if record is None:
            return CallResult(**base)
        return CallResult(
            **base,
            has_record=True,
            disposition=record.disposition,
            amd_result=record.amd_result,
            end_reason=record.end_reason,
            first_word_latency=record.first_word_latency,
            turns=[
                TurnLatency(
                    t.end_of_turn_delay,
                    t.transcription_delay,
                    t.llm_ttft,
                    t.tts_ttfb,
                    t.total_latency,
                )
                for t in record.turns
            ],
        )
