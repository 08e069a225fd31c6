"""Read queries for the campaign workbook (`campaign/report.py`).

Every query streams (`yield_per`: batches on SQLite, a server-side cursor on
PostgreSQL), so a report's memory does not grow with the campaign. Test
attempts and test contacts are left out unless `include_tests` is set (a test
campaign, whose calls are all tests, reports them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Executable, func, or_, select
from sqlalchemy.orm import Session

from campaign.store.models import Attempt, CallRecord, Campaign, Contact, Rejection, Turn

#: rows fetched per round trip; large enough to amortise, small enough to stay flat
BATCH = 2000


@dataclass(frozen=True)
class CampaignInfo:
    id: int
    name: str
    status: str
    region: str
    config: dict[str, Any]
    created_at: datetime

    @property
    def is_test(self) -> bool:
        """A test campaign (`is_test: true` in its file): every call it makes is a test."""
        return bool(self.config.get("is_test"))


class ContactRow(NamedTuple):
    id: int
    name: str | None
    e164: str
    raw_phone: str
    extension: str | None
    timezones: list[Any]
    source_row: int
    attempts_count: int
    status: str
    last_outcome: str | None
    disposition: str | None
    variables: dict[str, Any]


class AttemptRow(NamedTuple):
    id: int
    contact_id: int
    number: int
    name: str | None
    e164: str
    timezones: list[Any]
    status: str
    outcome: str | None
    sip_status_code: int | None
    sip_status: str | None
    room_name: str
    error: str | None
    claimed_at: datetime
    dial_started_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    has_call: bool
    amd_result: str | None
    disposition: str | None
    end_reason: str | None
    first_word_latency: float | None
    llm_prompt_tokens: int | None
    llm_completion_tokens: int | None
    tts_characters: int | None
    stt_audio_seconds: float | None


class TurnRow(NamedTuple):
    attempt_id: int
    contact_id: int
    room_name: str
    turn: int
    user_text: str | None
    agent_text: str | None
    end_of_turn_delay: float | None
    transcription_delay: float | None
    llm_ttft: float | None
    tts_ttfb: float | None
    total_latency: float | None


class RejectionRow(NamedTuple):
    source: str
    source_row: int
    reason: str
    raw: str
    e164: str | None
    duplicate_of_row: int | None
    cells: dict[str, Any]


def find_campaign(session: Session, name: str) -> CampaignInfo | None:
    row = session.execute(
        select(
            Campaign.id,
            Campaign.name,
            Campaign.status,
            Campaign.region,
            Campaign.config,
            Campaign.created_at,
        ).where(Campaign.name == name)
    ).one_or_none()
    return None if row is None else CampaignInfo(*row)


def _stream(session: Session, stmt: Executable) -> Iterator[Any]:
    yield from session.execute(stmt.execution_options(yield_per=BATCH))


def _contacts_of(campaign_id: int, include_tests: bool) -> Any:
    where = Contact.campaign_id == campaign_id
    return where if include_tests else where & Contact.is_test.is_(False)


def _attempts_of(campaign_id: int, include_tests: bool) -> Any:
    where = Attempt.campaign_id == campaign_id
    if include_tests:
        return where
    return where & Attempt.is_test.is_(False) & Contact.is_test.is_(False)


def contact_variable_keys(session: Session, campaign_id: int, include_tests: bool) -> list[str]:
    """Every variable name any contact carries, in first-seen order."""
    keys: dict[str, None] = {}
    stmt = (
        select(Contact.variables)
        .where(_contacts_of(campaign_id, include_tests))
        .order_by(Contact.id)
    )
    for (variables,) in _stream(session, stmt):
        keys.update(dict.fromkeys(variables or {}))
    return list(keys)


def iter_contacts(session: Session, campaign_id: int, include_tests: bool) -> Iterator[ContactRow]:
    stmt = (
        select(
            Contact.id,
            Contact.name,
            Contact.e164,
            Contact.raw_phone,
            Contact.extension,
            Contact.timezones,
            Contact.source_row,
            Contact.attempts_count,
            Contact.status,
            Contact.last_outcome,
            Contact.disposition,
            Contact.variables,
        )
        .where(_contacts_of(campaign_id, include_tests))
        .order_by(Contact.id)
    )
    for row in _stream(session, stmt):
        yield ContactRow(*row)


def iter_attempts(session: Session, campaign_id: int, include_tests: bool) -> Iterator[AttemptRow]:
    """Attempts with their contact and, when the agent wrote one, its call record."""
    stmt = (
        select(
            Attempt.id,
            Attempt.contact_id,
            Attempt.number,
            Contact.name,
            Contact.e164,
            Contact.timezones,
            Attempt.status,
            Attempt.outcome,
            Attempt.sip_status_code,
            Attempt.sip_status,
            Attempt.room_name,
            Attempt.error,
            Attempt.claimed_at,
            Attempt.dial_started_at,
            Attempt.answered_at,
            Attempt.ended_at,
            CallRecord.id.is_not(None),
            CallRecord.amd_result,
            CallRecord.disposition,
            CallRecord.end_reason,
            CallRecord.first_word_latency,
            CallRecord.llm_prompt_tokens,
            CallRecord.llm_completion_tokens,
            CallRecord.tts_characters,
            CallRecord.stt_audio_seconds,
        )
        .join(Contact, Contact.id == Attempt.contact_id)
        .outerjoin(CallRecord, CallRecord.attempt_id == Attempt.id)
        .where(_attempts_of(campaign_id, include_tests))
        .order_by(Attempt.id)
    )
    for row in _stream(session, stmt):
        yield AttemptRow(*row)


def iter_turns(session: Session, campaign_id: int, include_tests: bool) -> Iterator[TurnRow]:
    stmt = (
        select(
            Attempt.id,
            Attempt.contact_id,
            CallRecord.room_name,
            Turn.index,
            Turn.user_text,
            Turn.agent_text,
            Turn.end_of_turn_delay,
            Turn.transcription_delay,
            Turn.llm_ttft,
            Turn.tts_ttfb,
            Turn.total_latency,
        )
        .join(CallRecord, CallRecord.id == Turn.call_id)
        .join(Attempt, Attempt.id == CallRecord.attempt_id)
        .join(Contact, Contact.id == Attempt.contact_id)
        .where(_attempts_of(campaign_id, include_tests))
        # (call_id, index) is the unique index, so this order needs no sort.
        .order_by(Turn.call_id, Turn.index)
    )
    for row in _stream(session, stmt):
        yield TurnRow(*row)


def rejection_cell_keys(session: Session, campaign_id: int) -> list[str]:
    """Every original column name in the rejected rows, in first-seen order."""
    keys: dict[str, None] = {}
    stmt = (
        select(Rejection.cells)
        .where(Rejection.campaign_id == campaign_id)
        .order_by(Rejection.source, Rejection.source_row)
    )
    for (cells,) in _stream(session, stmt):
        keys.update(dict.fromkeys(cells or {}))
    return list(keys)


def iter_rejections(session: Session, campaign_id: int) -> Iterator[RejectionRow]:
    stmt = (
        select(
            Rejection.source,
            Rejection.source_row,
            Rejection.reason,
            Rejection.raw,
            Rejection.e164,
            Rejection.duplicate_of_row,
            Rejection.cells,
        )
        .where(Rejection.campaign_id == campaign_id)
        .order_by(Rejection.source, Rejection.source_row)
    )
    for row in _stream(session, stmt):
        yield RejectionRow(*row)


def count_test_attempts(session: Session, campaign_id: int) -> int:
    """Attempts left out of the report because they (or their contact) are tests."""
    stmt = (
        select(func.count())
        .select_from(Attempt)
        .join(Contact, Contact.id == Attempt.contact_id)
        .where(Attempt.campaign_id == campaign_id)
        .where(or_(Attempt.is_test.is_(True), Contact.is_test.is_(True)))
    )
    return int(session.execute(stmt).scalar_one())
