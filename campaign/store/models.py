"""The ledger's tables (SQLAlchemy 2 declarative models).

Every state change is a committed row before the side effect it describes.
Times are stored as timezone-aware UTC. Schema changes go through Alembic
(`campaign/migrations`); `tests/integration/test_migrations.py` fails when
these models and the migrations drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ClippedString(TypeDecorator[str]):
    """Free text from outside (a SIP server's reason, the LLM's callback time, a sheet's
    name) cut to the column's length: PostgreSQL refuses a longer value, and a refused
    verdict or call record would be retried for ever."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        length: int | None = getattr(self.impl, "length", None)
        if value is None or length is None:
            return value
        return value[:length]


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="active")
    region: Mapped[str] = mapped_column(String(2), default="US")
    #: the validated campaign YAML as JSON, as of the last run or import
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: the pacing token bucket shared by every dialer process (GCRA TAT, epoch seconds)
    pace_tat: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    contacts: Mapped[list[Contact]] = relationship(back_populates="campaign")


#: contact statuses a claim picks from (`ContactStatus.PENDING`, `ContactStatus.RETRY`)
DUE_STATUSES = ("pending", "retry")


class ZoneSet(Base):
    """A canonical list of IANA zones (sorted, without repeats) that contacts share.

    A national list has a million contacts but a handful of zone sets, so a claim
    evaluates calling hours once per set. The empty list is a set of its own: the
    campaign's fallback zone applies to it when it is evaluated. Rows never change.
    """

    __tablename__ = "zone_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: the zones joined by spaces ("" for none): the lookup key
    key: Mapped[str] = mapped_column(String(1000), unique=True)
    zones: Mapped[list[Any]] = mapped_column(default=list)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        # a test call's contact (is_test) may share its number with a sheet's contact
        UniqueConstraint("campaign_id", "e164", "is_test", name="uq_contacts_campaign_e164"),
        Index("ix_contacts_due", "campaign_id", "status", "next_attempt_at"),
        # The claim's index: per campaign, zone set and due status, the earliest due
        # first. Only due contacts carry `due_at`, so the index holds only them; each
        # probe states `due_at IS NOT NULL` or `due_at <= :now`, which both backends
        # match to the predicate.
        Index(
            "ix_contacts_claim",
            "campaign_id",
            "zone_set_id",
            "status",
            "due_at",
            "id",
            sqlite_where=text("due_at IS NOT NULL"),
            postgresql_where=text("due_at IS NOT NULL"),
        ),
        # a contact that is due but has no due_at would never be claimed
        CheckConstraint(
            "due_at IS NOT NULL OR is_test OR status NOT IN ('pending', 'retry')",
            name="due_at_set",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    e164: Mapped[str] = mapped_column(String(20))
    raw_phone: Mapped[str] = mapped_column(Text, default="")
    extension: Mapped[str | None] = mapped_column(String(20))
    name: Mapped[str | None] = mapped_column(ClippedString(200))
    #: IANA zones; calling hours must hold in each
    timezones: Mapped[list[Any]] = mapped_column(default=list)
    #: the canonical form of `timezones` (kept in step on every ORM flush)
    zone_set_id: Mapped[int] = mapped_column(ForeignKey("zone_sets.id"))
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: the sheet's absolute path, as long as the file system allows
    source: Mapped[str] = mapped_column(Text, default="")
    source_row: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    #: when a due contact became due (its retry time, or its import time); NULL unless due
    due_at: Mapped[datetime | None] = mapped_column()
    last_outcome: Mapped[str | None] = mapped_column(String(30))
    disposition: Mapped[str | None] = mapped_column(ClippedString(50))
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    campaign: Mapped[Campaign] = relationship(back_populates="contacts")
    attempts: Mapped[list[Attempt]] = relationship(back_populates="contact")


def zone_key(zones: Any) -> tuple[str, ...]:
    """A contact's zones in canonical form: sorted, without repeats or blanks."""
    return tuple(sorted({str(z) for z in zones or [] if z}))


def due_at_for(
    status: str, is_test: bool, next_attempt_at: datetime | None, since: datetime
) -> datetime | None:
    """`due_at` for a contact in this state: set only while a claim may pick it.

    `since` is the moment it became due when no retry time says otherwise (its import).
    """
    if status not in DUE_STATUSES or is_test:
        return None
    return next_attempt_at or since


def zone_set_ids(session: Session, keys: Any) -> dict[tuple[str, ...], int]:
    """The ids of these canonical zone lists, creating the missing ones (race-safe)."""
    wanted = set(keys)
    found = _find_zone_sets(session, wanted)
    missing = wanted - found.keys()
    if missing:
        dialect = session.get_bind().dialect.name
        table: Any = ZoneSet.__table__
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        session.execute(
            insert.on_conflict_do_nothing(),
            [{"key": " ".join(k), "zones": list(k)} for k in sorted(missing)],
        )
        found.update(_find_zone_sets(session, missing))
    return found


def _find_zone_sets(session: Session, keys: set[tuple[str, ...]]) -> dict[tuple[str, ...], int]:
    if not keys:
        return {}
    by_text = {" ".join(k): k for k in keys}
    rows = session.execute(select(ZoneSet.key, ZoneSet.id).where(ZoneSet.key.in_(by_text)))
    return {by_text[key]: zone_set_id for key, zone_set_id in rows}


@event.listens_for(Session, "before_flush")
def _keep_contacts_claimable(session: Session, _context: Any, _instances: Any) -> None:
    """Every ORM write of a contact keeps `zone_set_id` and `due_at` true to its state.

    Bulk statements (imports, cancel, resume) set both themselves.
    """
    contacts = [o for o in (*session.new, *session.dirty) if isinstance(o, Contact)]
    if not contacts:
        return
    rezoned = [
        c
        for c in contacts
        if c.zone_set_id is None or inspect(c).attrs.timezones.history.has_changes()
    ]
    ids = zone_set_ids(session, {zone_key(c.timezones) for c in rezoned})
    rezoned_ids = {id(c) for c in rezoned}
    now = utcnow()  # one moment per flush: contacts added together keep their id order
    for contact in contacts:
        if id(contact) in rezoned_ids:
            contact.zone_set_id = ids[zone_key(contact.timezones)]
        if contact.created_at is None:
            contact.created_at = now
        contact.due_at = due_at_for(
            contact.status or DUE_STATUSES[0],
            bool(contact.is_test),
            contact.next_attempt_at,
            contact.created_at,
        )


class Rejection(Base):
    """A sheet row that did not become a contact (invalid, or a duplicate)."""

    __tablename__ = "rejections"
    __table_args__ = (
        UniqueConstraint("campaign_id", "source", "source_row", name="uq_rejections_row"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    #: the sheet's absolute path, as long as the file system allows
    source: Mapped[str] = mapped_column(Text, default="")
    source_row: Mapped[int] = mapped_column(Integer)
    raw: Mapped[str] = mapped_column(Text, default="")
    #: empty, unparseable, invalid, not_dialable_type, do_not_call, duplicate
    reason: Mapped[str] = mapped_column(String(30))
    e164: Mapped[str | None] = mapped_column(String(20))
    duplicate_of_row: Mapped[int | None] = mapped_column(Integer)
    cells: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DncEntry(Base):
    """The do-not-call list: global, applied at import and right before each dial."""

    __tablename__ = "dnc"

    e164: Mapped[str] = mapped_column(String(20), primary_key=True)
    source: Mapped[str] = mapped_column(String(50), default="manual")  # manual|import|agent
    note: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attempt(Base):
    """One dial of one contact. Written (`dialing`) before the room is created."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("contact_id", "number", name="uq_attempts_contact_number"),
        Index("ix_attempts_campaign_status", "campaign_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1-based attempt number for the contact
    status: Mapped[str] = mapped_column(String(20), default="dialing")
    outcome: Mapped[str | None] = mapped_column(String(30))
    sip_status_code: Mapped[int | None] = mapped_column(Integer)
    sip_status: Mapped[str | None] = mapped_column(ClippedString(200))
    room_name: Mapped[str] = mapped_column(String(200), default="")
    dialer_id: Mapped[str] = mapped_column(String(100), default="")
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    dial_started_at: Mapped[datetime | None] = mapped_column()
    answered_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()

    contact: Mapped[Contact] = relationship(back_populates="attempts")
    call: Mapped[CallRecord | None] = relationship(back_populates="attempt")


class CallRecord(Base):
    """The agent's record of a connected call. No audio is ever stored."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    attempt_id: Mapped[int] = mapped_column(
        ForeignKey("attempts.id", ondelete="CASCADE"), unique=True
    )
    room_name: Mapped[str] = mapped_column(String(200), default="")
    answered_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    end_reason: Mapped[str | None] = mapped_column(String(30))
    amd_result: Mapped[str | None] = mapped_column(String(20))
    disposition: Mapped[str | None] = mapped_column(ClippedString(50))
    disposition_note: Mapped[str | None] = mapped_column(Text)
    callback_at: Mapped[str | None] = mapped_column(ClippedString(100))
    voicemail_left: Mapped[bool] = mapped_column(Boolean, default=False)
    #: seconds after the answer: AMD's verdict, the end of the beep it heard (None: no
    #: beep), the start of the voicemail message
    amd_latency: Mapped[float | None] = mapped_column(Float)
    beep_latency: Mapped[float | None] = mapped_column(Float)
    message_latency: Mapped[float | None] = mapped_column(Float)
    added_to_dnc: Mapped[bool] = mapped_column(Boolean, default=False)
    transcript: Mapped[list[Any] | None] = mapped_column()
    llm_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    llm_completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tts_characters: Mapped[int] = mapped_column(Integer, default=0)
    stt_audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    first_word_latency: Mapped[float | None] = mapped_column(Float)  # seconds after answer
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    attempt: Mapped[Attempt] = relationship(back_populates="call")
    turns: Mapped[list[Turn]] = relationship(back_populates="call", order_by="Turn.index")


class Turn(Base):
    """Per-turn voice latency of one agent response (seconds)."""

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("call_id", "index", name="uq_turns_call_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    user_text: Mapped[str | None] = mapped_column(Text)
    agent_text: Mapped[str | None] = mapped_column(Text)
    end_of_turn_delay: Mapped[float | None] = mapped_column(Float)
    transcription_delay: Mapped[float | None] = mapped_column(Float)
    llm_ttft: Mapped[float | None] = mapped_column(Float)
    tts_ttfb: Mapped[float | None] = mapped_column(Float)
    total_latency: Mapped[float | None] = mapped_column(Float)

    call: Mapped[CallRecord] = relationship(back_populates="turns")


class Schedule(Base):
    """A nightly run of a campaign; APScheduler keeps its trigger state in `apscheduler_jobs`."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign: Mapped[str] = mapped_column(String(200), index=True)
    cron: Mapped[str] = mapped_column(String(100))  # crontab: minute hour day month weekday
    timezone: Mapped[str] = mapped_column(String(64))  # IANA zone the cron is read in
    misfire_grace_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignRun(Base):
    """One scheduled or manual run of a campaign. The open row (no finished_at) is the run
    lock: at most one per campaign, renewed by heartbeat, taken over once expired."""

    __tablename__ = "campaign_runs"
    __table_args__ = (
        Index(
            "uq_campaign_runs_open",
            "campaign",
            unique=True,
            sqlite_where=text("finished_at IS NULL"),
            postgresql_where=text("finished_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign: Mapped[str] = mapped_column(String(200))
    schedule_id: Mapped[int | None] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(20))  # schedule|manual
    owner: Mapped[str] = mapped_column(String(100))  # host:pid:uuid of the scheduler
    #: running, done, failed, interrupted, abandoned (owner vanished), skipped, missed
    status: Mapped[str] = mapped_column(String(20), default="running")
    scheduled_for: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    summary: Mapped[str | None] = mapped_column(Text)


class DialerLease(Base):
    """A running dialer process: its heartbeat. Times come from the database's clock, so
    dialers on hosts with skewed clocks agree on who expired. Only the in-flight attempts
    of a dialer whose lease expired are reconciled by the others."""

    __tablename__ = "dialer_leases"

    dialer_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    campaign: Mapped[str] = mapped_column(String(200), default="")
    #: what the dialer is doing, for `dialer status` ("dialing", "waiting for LiveKit ...")
    state: Mapped[str] = mapped_column(String(500), default="")
    started_at: Mapped[datetime] = mapped_column()
    heartbeat_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column(index=True)


class User(Base):
    """Someone who may use the desk: an operator (runs campaigns) or a viewer (reads)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    #: argon2id hash (the PHC string), never the password
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # operator|viewer
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """An API token for scripts and CRMs; only its SHA-256 is kept (it is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()


class DeskSession(Base):
    """A signed-in browser: the cookie carries a random id, the ledger its SHA-256.

    Kept in the ledger so that every `dialer serve` replica honours every session.
    """

    __tablename__ = "desk_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: the token every form of this session must send back
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class LoginFailure(Base):
    """A failed sign-in, counted per user name to rate-limit guessing across replicas."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_name_at", "name", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class RunRequest(Base):
    """An operator's "start" from the desk, waiting for a `dialer serve` runner to take it.

    A runner takes it with one guarded update (`status = 'pending'`), so exactly one
    replica runs it; the run itself then holds the campaign's run lock (`campaign_runs`).
    """

    __tablename__ = "run_requests"
    __table_args__ = (Index("ix_run_requests_status", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign: Mapped[str] = mapped_column(String(200))
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: pending, taken, done, failed, skipped, withdrawn
    status: Mapped[str] = mapped_column(String(20), default="pending")
    taken_by: Mapped[str | None] = mapped_column(String(100))
    taken_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    summary: Mapped[str | None] = mapped_column(Text)


class DeskUpload(Base):
    """A contact sheet uploaded to the desk, held between its preview and its import.

    Kept in the ledger under a random id (the uploader's file name is only a label), so
    the preview and the import may be served by different replicas; deleted after a day.
    """

    __tablename__ = "desk_uploads"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(200))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
