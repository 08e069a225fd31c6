"""Ledger queries for dialing: claims, the attempt lifecycle, reconciliation, control.

Every function runs in its own transaction and returns plain dataclasses, so the
engine never holds ORM objects across awaits. The claim is the one place where
concurrency matters: it serialises on the campaign row (PostgreSQL
`SELECT ... FOR UPDATE`, SQLite `BEGIN IMMEDIATE`), so the in-flight count, the
shared pacing bucket and the contact it picks are consistent across every
dialer process sharing the ledger; the contact taken is written under a guard
(still due), so a writer that changed it meanwhile wins.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, cast, overload

from sqlalchemy import (
    BindParameter,
    Boolean,
    Connection,
    Integer,
    Row,
    String,
    Table,
    TextClause,
    TextualSelect,
    bindparam,
    case,
    column,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from campaign.errors import UserError
from campaign.outcomes import (
    FINAL_CONTACT_STATUSES,
    AttemptStatus,
    CampaignStatus,
    ContactStatus,
    Outcome,
)
from campaign.pacing import TokenBucket
from campaign.store.db import Ledger
from campaign.store.models import (
    DUE_STATUSES,
    Attempt,
    CallRecord,
    Campaign,
    Contact,
    DncEntry,
    UTCDateTime,
    ZoneSet,
    due_at_for,
    utcnow,
)
from campaign.windows import CallingWindow

IN_FLIGHT = (AttemptStatus.DIALING.value, AttemptStatus.IN_CALL.value)
#: attempt outcomes after which nobody was dialed (not counted against max attempts)
UNDIALED_OUTCOMES = (
    Outcome.AGENT_UNAVAILABLE.value,
    Outcome.DO_NOT_CALL.value,
    Outcome.CANCELLED.value,
)


class CampaignNotFound(UserError, LookupError):
    """No campaign of that name in the ledger."""


@dataclass(frozen=True)
class Claimed:
    """A contact claimed for one attempt; the attempt row (`dialing`) is committed."""

    attempt_id: int
    number: int
    contact_id: int
    e164: str
    extension: str | None
    name: str | None
    variables: dict[str, str]
    timezones: list[str]
    room_name: str
    is_test: bool


ClaimReason = Literal["claimed", "inactive", "capped", "paced", "none_due"]


@dataclass(frozen=True)
class ClaimResult:
    reason: ClaimReason
    campaign_status: str
    in_flight: int
    claimed: Claimed | None = None
    #: for `paced`: seconds until the shared bucket has a token
    wait: float = 0.0


@dataclass(frozen=True)
class InFlight:
    """An attempt left `dialing` or `in_call`, as reconciliation sees it."""

    attempt_id: int
    contact_id: int
    e164: str
    status: str
    room_name: str
    dialer_id: str
    claimed_at: datetime
    dial_started_at: datetime | None
    answered_at: datetime | None
    #: the owner's lease is current (it may be finishing the attempt itself)
    owner_alive: bool = False


@dataclass(frozen=True)
class CallView:
    """What the dialer reads from the agent's call record."""

    amd_result: str | None
    disposition: str | None
    end_reason: str | None
    added_to_dnc: bool
    answered_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class Finalised:
    """The result of finalising an attempt: the contact's new status and due time."""

    outcome: Outcome
    contact_status: str
    next_attempt_at: datetime | None
    dials: int


@dataclass
class CampaignSummary:
    """What `dialer status` and the live view show."""

    name: str
    status: str
    contacts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    attempts: int = 0
    dials: int = 0
    next_attempt_at: datetime | None = None
    first_dial_at: datetime | None = None
    last_dial_at: datetime | None = None
    #: what each live dialer of the campaign is doing (filled by the runner's `status`)
    dialers: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return sum(n for s, n in self.contacts.items() if s not in FINAL_CONTACT_STATUSES)


def _dialect(conn: Session | Connection) -> str:
    return (conn.get_bind().dialect if isinstance(conn, Session) else conn.dialect).name


def _serialise(conn: Session | Connection) -> None:
    """Take SQLite's write lock now, so a claim's read and write are one serial step."""
    if _dialect(conn) == "sqlite":
        (conn.connection() if isinstance(conn, Session) else conn).exec_driver_sql(
            "BEGIN IMMEDIATE"
        )


def upsert_campaign(session: Session, name: str, region: str) -> Campaign:
    """The campaign called `name`, created with `region` if it does not exist yet.

    The one way a campaign row is made. Two processes creating the same new campaign at
    once (two dialers, a dialer and an import) both get it: the insert skips a row that
    another wrote first (PostgreSQL waits for that writer's commit), never an
    IntegrityError.
    """
    dialect = session.get_bind().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        upsert(Campaign)
        .values(name=name, region=region, status=CampaignStatus.ACTIVE.value)
        .on_conflict_do_nothing(index_elements=[Campaign.name])
    )
    return session.scalars(select(Campaign).where(Campaign.name == name)).one()


def ensure_campaign(
    ledger: Ledger, name: str, *, region: str, config: dict[str, Any]
) -> tuple[int, str]:
    """The campaign's id and status, creating the row if needed and storing the config."""
    with ledger.session() as session:
        _serialise(session)
        campaign = upsert_campaign(session, name, region)
        campaign.config = config
        campaign.region = region
        session.flush()
        return campaign.id, campaign.status


def campaign_id(ledger: Ledger, name: str) -> int:
    with ledger.session() as session:
        found = session.scalar(select(Campaign.id).where(Campaign.name == name))
    if found is None:
        raise CampaignNotFound(f"no campaign named {name!r} in the ledger")
    return found


def contact_count(ledger: Ledger, campaign: int) -> int:
    with ledger.session() as session:
        return (
            session.scalar(
                select(func.count()).select_from(Contact).where(Contact.campaign_id == campaign)
            )
            or 0
        )


def _in_flight_count(conn: Session | Connection, campaign: int) -> int:
    return (
        conn.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.campaign_id == campaign, Attempt.status.in_(IN_FLIGHT))
        )
        or 0
    )


@dataclass(frozen=True)
class NewAttempt:
    id: int
    number: int
    room_name: str


@overload
def new_attempt(
    conn: Session | Connection,
    contact_id: int,
    campaign_id: int,
    *,
    campaign_name: str,
    dialer_id: str,
    is_test: bool,
    now: datetime,
    only_if_due: Literal[False] = False,
) -> NewAttempt: ...


@overload
def new_attempt(
    conn: Session | Connection,
    contact_id: int,
    campaign_id: int,
    *,
    campaign_name: str,
    dialer_id: str,
    is_test: bool,
    now: datetime,
    only_if_due: bool,
) -> NewAttempt | None: ...


def new_attempt(
    conn: Session | Connection,
    contact_id: int,
    campaign_id: int,
    *,
    campaign_name: str,
    dialer_id: str,
    is_test: bool,
    now: datetime,
    only_if_due: bool = False,
) -> NewAttempt | None:
    """Write the contact's next attempt row (`dialing`) and mark the contact in progress.

    For `dialer call`, and for a claim whose contact needed a second look. With
    `only_if_due` nothing is written (None) unless the contact is still due when its
    row is updated: a writer that changed it since it was read wins. One statement on
    PostgreSQL (a data-modifying CTE), two on SQLite.
    """
    params = {
        "contact": contact_id,
        "campaign": campaign_id,
        "campaign_name": campaign_name,
        "dialer": dialer_id,
        "is_test": is_test,
        "now": now,
        "stamp": utcnow(),
    }
    if _dialect(conn) == "postgresql":
        row = conn.execute(_new_attempt_query(only_if_due, True), params).first()
    else:
        took = conn.execute(_take_contact_query(only_if_due), params)
        if not took.rowcount:  # type: ignore[attr-defined]
            return None
        row = conn.execute(_new_attempt_query(only_if_due, False), params).first()
    return None if row is None else NewAttempt(int(row.id), int(row.number), row.room_name)


#: the guard of a claim's update: the contact is still due (no other writer moved it)
_STILL_DUE = "status IN ('pending', 'retry') AND due_at IS NOT NULL AND is_test = false"
#: The one place attempts are numbered and rooms named (`<campaign>-<contact>-<attempt>`),
#: for claims and `dialer call` alike: the next attempt of each contact in `took (id)`.
_INSERT_ATTEMPT = (
    "INSERT INTO attempts"
    " (campaign_id, contact_id, number, status, room_name, dialer_id, is_test, claimed_at)"
    " SELECT :campaign, next.contact_id, next.number, 'dialing', :campaign_name || '-'"
    " || CAST(next.contact_id AS VARCHAR) || '-' || CAST(next.number AS VARCHAR),"
    " :dialer, :is_test, :now"
    " FROM (SELECT took.id AS contact_id, (SELECT COALESCE(MAX(a.number), 0) + 1"
    " FROM attempts AS a WHERE a.contact_id = took.id) AS number FROM took) AS next"
    " RETURNING id, number, room_name"
)
_ATTEMPT_PARAMS = (
    bindparam("now", type_=UTCDateTime()),
    bindparam("is_test", type_=Boolean()),
)


@lru_cache(maxsize=4)
def _take_contact_query(only_if_due: bool) -> TextClause:
    """Mark the contact in progress (guarded by its still being due, with `only_if_due`)."""
    return text(
        "UPDATE contacts SET status = 'in_progress', due_at = NULL, updated_at = :stamp"
        f" WHERE id = :contact{' AND ' + _STILL_DUE if only_if_due else ''}"
    ).bindparams(bindparam("stamp", type_=UTCDateTime()))


@lru_cache(maxsize=4)
def _new_attempt_query(only_if_due: bool, with_take: bool) -> TextClause:
    """Insert the contact's next attempt; `with_take` (PostgreSQL) first marks the contact
    in progress in the same statement, and inserts nothing when that matched nothing."""
    params: tuple[BindParameter[Any], ...] = _ATTEMPT_PARAMS
    if with_take:
        took = f"{_take_contact_query(only_if_due).text} RETURNING id"
        params = (*_ATTEMPT_PARAMS, bindparam("stamp", type_=UTCDateTime()))
    else:
        took = "SELECT :contact AS id"
    return text(f"WITH took AS ({took}) {_INSERT_ATTEMPT}").bindparams(*params)


def claim_next(
    ledger: Ledger,
    campaign: int,
    *,
    campaign_name: str,
    dialer_id: str,
    now: datetime,
    wall: float,
    max_concurrent: int,
    bucket: TokenBucket,
    window: CallingWindow,
    is_test: bool = False,
    clock: Callable[[], tuple[datetime, float]] | None = None,
) -> ClaimResult:
    """Claim the earliest due contact inside its calling hours and write its attempt row.

    One short transaction holds the campaign row: the cap and the shared pacing bucket
    are checked, `window` is evaluated once per zone set (never per contact), one
    indexed probe per open set finds its earliest due contact, and only the row taken
    is written. `now` (the injected clock) decides what is due and open; `wall` (real
    epoch seconds) drives the pacing bucket, whose state lives on the campaign row so
    every process shares it. With `clock` (returning `now` and `wall`), both are read
    again once the campaign row is held, so a claim that waited for the lock is counted,
    paced and stamped (`claimed_at`) at the moment it holds the slot.

    Every claim waits for the campaign row, so how long one holds it bounds the claims
    per second of all the dialers together. On PostgreSQL it is held for two statements
    and the commit: its lock, then one that does the rest (`_claim_query`). On SQLite,
    whose writers are serial anyway, the same steps are separate statements. The zone
    sets are read once per process (rows are only ever added): the lock's statement
    says whether any were added since.
    """
    with ledger.transaction() as conn:
        _serialise(conn)
        # Before the campaign row is locked: other claims need not wait for this part.
        if not ledger.zone_sets:
            _read_zone_sets(ledger, conn)
        known = max(ledger.zone_sets, default=0)
        open_sets = _open_sets(ledger, window, now)
        lock = _LOCK_CAMPAIGN if ledger.is_postgres else _LOCK_CAMPAIGN_SQLITE
        status, pace_tat, newest = conn.execute(lock, {"campaign": campaign}).one()
        if newest is not None and newest > known:  # an import added zone sets meanwhile
            _read_zone_sets(ledger, conn)
            open_sets = _open_sets(ledger, window, now)
        if clock is not None:
            now, wall = clock()
        bucket.tat = pace_tat if pace_tat is not None else -math.inf
        wait = bucket.wait_time(wall)
        if status != CampaignStatus.ACTIVE.value or wait > 0:
            in_flight = _in_flight_count(conn, campaign)
            if status != CampaignStatus.ACTIVE.value:
                return ClaimResult("inactive", status, in_flight)
            if in_flight >= max_concurrent:
                return ClaimResult("capped", status, in_flight)
            return ClaimResult("paced", status, in_flight, wait=wait)

        params: dict[str, Any] = {
            "campaign": campaign,
            "campaign_name": campaign_name,
            "dialer": dialer_id,
            "is_test": is_test,
            "now": now,
            "cap": max_concurrent,
            "stamp": utcnow(),
        }
        params.update({f"zs{i}": zs for i, zs in enumerate(open_sets)}, sets=open_sets)
        ahead = replace(bucket)
        ahead.try_take(wall)  # the bucket as it is if this claim is made
        params["tat"] = ahead.tat
        picked: Row[Any] | None = None
        attempt: NewAttempt | None = None
        second_look = True  # SQLite: step by step
        if ledger.is_postgres:
            # One statement: counted, probed, taken, numbered and paced (`_claim_query`).
            row = conn.execute(_CLAIM_PG, params).one()
            in_flight = int(row.in_flight)
            if row.attempt_id is not None:
                picked = row
                attempt = NewAttempt(row.attempt_id, row.attempt_number, row.room_name)
            # a contact read but not taken (DNC, stale, changed meanwhile) needs a second look
            second_look = row.id is not None and attempt is None
        if second_look:
            in_flight, picked, attempt = _take_earliest_due(conn, params, len(open_sets))
            if attempt is not None:
                conn.execute(_PACE, params)
        if in_flight >= max_concurrent:
            return ClaimResult("capped", status, in_flight)
        if picked is None or attempt is None:
            return ClaimResult("none_due", status, in_flight)
        claimed = Claimed(
            attempt_id=attempt.id,
            number=attempt.number,
            contact_id=picked.id,
            e164=picked.e164,
            extension=picked.extension,
            name=picked.name,
            variables={str(k): str(v) for k, v in (picked.variables or {}).items()},
            timezones=[str(z) for z in picked.timezones or []],
            room_name=attempt.room_name,
            is_test=is_test,
        )
        bucket.tat = ahead.tat
        return ClaimResult("claimed", status, in_flight + 1, claimed)


#: the campaign row, locked for the claim (SQLite: the write lock is held already), and
#: the newest zone set's id (one seek in its primary key)
_LOCK_CAMPAIGN_SQLITE = text(
    "SELECT status, pace_tat, (SELECT max(id) FROM zone_sets) AS newest"
    " FROM campaigns WHERE id = :campaign"
)
_LOCK_CAMPAIGN = text(f"{_LOCK_CAMPAIGN_SQLITE.text} FOR UPDATE OF campaigns")
_PACE = text(
    "UPDATE campaigns SET pace_tat = :tat, updated_at = :stamp WHERE id = :campaign"
).bindparams(bindparam("stamp", type_=UTCDateTime()))

#: rows one claim may pass over (changed by another writer, or on the DNC list) before
#: it reports nothing due; the next claim, or `close_dnc_contacts`, carries on
_MAX_PASSED = 100


def _zone_sets(conn: Session | Connection) -> list[tuple[int, list[str]]]:
    """Every zone set (a handful per ledger, whatever the number of contacts)."""
    rows = conn.execute(select(ZoneSet.id, ZoneSet.zones).order_by(ZoneSet.id))
    return [(zs, [str(z) for z in zones or []]) for zs, zones in rows]


def _open_sets(ledger: Ledger, window: CallingWindow, now: datetime) -> list[int]:
    return [zs for zs, zones in ledger.zone_sets.items() if window.is_open(zones, now)]


def _read_zone_sets(ledger: Ledger, conn: Connection) -> None:
    """Add the zone sets not read yet to `ledger.zone_sets`."""
    known = max(ledger.zone_sets, default=0)
    rows = conn.execute(
        select(ZoneSet.id, ZoneSet.zones).where(ZoneSet.id > known).order_by(ZoneSet.id)
    )
    ledger.zone_sets.update((zs, [str(z) for z in zones or []]) for zs, zones in rows)


_CONTACTS = cast(Table, Contact.__table__)
_contacts = _CONTACTS.c
#: what a claim reads: the calls in flight, then the contact it takes (NULLs: none)
_PICKED_COLUMNS = (
    column("in_flight", Integer),
    _contacts.id,
    _contacts.status,
    _contacts.is_test,
    _contacts.due_at,
    _contacts.e164,
    _contacts.extension,
    _contacts.name,
    _contacts.variables,
    _contacts.timezones,
    column("listed", Boolean),
)
_IN_FLIGHT_SQL = (
    "SELECT count(*) AS in_flight FROM attempts WHERE campaign_id = :campaign"
    f" AND status IN ({', '.join(repr(s) for s in IN_FLIGHT)})"
)
_CONTACT_SQL = (
    "c.id, c.status, c.is_test, c.due_at, c.e164, c.extension, c.name, c.variables,"
    " c.timezones, EXISTS (SELECT 1 FROM dnc WHERE dnc.e164 = c.e164) AS listed"
)


def _earliest_due_sql(sets: int, passing: bool) -> str:
    """The id of the earliest due contact of `sets` open zone sets (NULL: none).

    One probe per set and status, each one seek in `ix_contacts_claim`. A pending
    contact is due from its import on, whatever the clock says (a clock behind the
    importer's must not hide a sheet); a retry once its time has come. The DNC list
    is not joined in (an anti-join misleads PostgreSQL's planner into a full sort):
    the contact's listing is read with it. Written as text and cached per shape:
    built as an expression, this costs more to assemble than to run.
    """
    skip = " AND id NOT IN :passed" if passing else ""
    probes = [
        f"SELECT * FROM (SELECT id, due_at FROM contacts"
        f" WHERE campaign_id = :campaign AND zone_set_id = :zs{i} AND status = '{status}'"
        f" AND {due}{skip} ORDER BY due_at, id LIMIT 1) AS p{i}_{status}"
        for i in range(sets)
        for status, due in (
            (ContactStatus.PENDING.value, "due_at IS NOT NULL"),
            (ContactStatus.RETRY.value, "due_at <= :now"),
        )
    ]
    if not probes:
        return "NULL"
    return f"(SELECT id FROM ({' UNION ALL '.join(probes)}) AS due ORDER BY due_at, id LIMIT 1)"


def _probe_params(sets: int, passing: bool) -> list[BindParameter[Any]]:
    params = [bindparam("now", type_=UTCDateTime())] if sets else []
    if passing and sets:
        params.append(bindparam("passed", expanding=True))
    return params


#: `_earliest_due_sql` on PostgreSQL: the same probes, the open sets an array, so one
#: short statement serves any number of sets (psycopg re-parses, on every execution, a
#: statement longer than the 4 KiB its cache keeps: 1 ms of CPU at 18 sets)
_EARLIEST_DUE_PG = "".join(
    (
        "(SELECT p.id FROM unnest(CAST(:sets AS integer[])) AS s (zs) CROSS JOIN LATERAL (",
        " UNION ALL ".join(
            "(SELECT id, due_at FROM contacts WHERE campaign_id = :campaign"
            f" AND zone_set_id = s.zs AND status = '{status}' AND {due}"
            " ORDER BY due_at, id LIMIT 1)"
            for status, due in (
                (ContactStatus.PENDING.value, "due_at IS NOT NULL"),
                (ContactStatus.RETRY.value, "due_at <= :now"),
            )
        ),
        ") AS p ORDER BY p.due_at, p.id LIMIT 1)",
    )
)


def _claim_query() -> TextualSelect:
    """A whole claim after the campaign row's lock, as one PostgreSQL statement.

    Its snapshot is taken once the lock is held, so the count of calls in flight sees
    every attempt an earlier claim wrote. Under the cap, the earliest due contact of
    the open sets is read with its DNC listing; if it is not listed it is marked in
    progress (guarded: still due), its attempt written and the bucket's new TAT
    stored. It returns the count, the contact read (if any) and the attempt (if
    written): a contact read but not taken is for `_take_earliest_due` to look at.
    """
    query = text(
        f"WITH flying AS ({_IN_FLIGHT_SQL}),"
        f" pick AS (SELECT {_CONTACT_SQL} FROM contacts AS c"
        f" WHERE c.id = {_EARLIEST_DUE_PG}"
        " AND (SELECT in_flight FROM flying) < :cap),"
        " took AS (UPDATE contacts SET status = 'in_progress', due_at = NULL,"
        f" updated_at = :stamp WHERE id = (SELECT id FROM pick WHERE NOT listed)"
        f" AND {_STILL_DUE} RETURNING id),"
        f" made AS ({_INSERT_ATTEMPT}),"
        " paced AS (UPDATE campaigns SET pace_tat = :tat, updated_at = :stamp"
        " WHERE id = :campaign AND EXISTS (SELECT 1 FROM made))"
        " SELECT flying.in_flight, pick.*, made.id AS attempt_id,"
        " made.number AS attempt_number, made.room_name"
        " FROM flying LEFT JOIN pick ON true LEFT JOIN made ON true"
    ).columns(
        *_PICKED_COLUMNS,
        column("attempt_id", Integer),
        column("attempt_number", Integer),
        column("room_name", String),
    )
    return query.bindparams(
        bindparam("now", type_=UTCDateTime()),
        *_ATTEMPT_PARAMS,
        bindparam("stamp", type_=UTCDateTime()),
    )


_CLAIM_PG = _claim_query()


@lru_cache(maxsize=256)
def _pick_query(sets: int, passing: bool) -> TextualSelect:
    """The calls in flight and, under the cap, the earliest due contact of the open sets."""
    query = text(
        f"SELECT flying.in_flight, {_CONTACT_SQL} FROM ({_IN_FLIGHT_SQL}) AS flying"
        " LEFT JOIN contacts AS c ON flying.in_flight < :cap"
        f" AND c.id = {_earliest_due_sql(sets, passing)}"
    ).columns(*_PICKED_COLUMNS)
    return query.bindparams(*_probe_params(sets, passing))


def _take_earliest_due(
    conn: Connection, params: dict[str, Any], sets: int
) -> tuple[int, Row[Any] | None, NewAttempt | None]:
    """The calls in flight, and the earliest due contact of the open sets with the
    attempt written for it (None, None: capped, or nothing due), step by step.

    Only the row taken is written (and so locked); its update re-checks that it is
    still due, so a contact another writer changed meanwhile (finalise, cancel) is
    passed over, as is one on the DNC list (closed here) or a stale due time.
    """
    passed: list[int] = []
    while True:
        query = _pick_query(sets, bool(passed))
        picked = conn.execute(query, {**params, "passed": passed} if passed else params).one()
        in_flight = int(picked.in_flight)
        if picked.id is None or len(passed) >= _MAX_PASSED:
            return in_flight, None, None
        passed.append(picked.id)
        this = _CONTACTS.update().where(_CONTACTS.c.id == picked.id)
        if picked.status not in DUE_STATUSES or picked.is_test or picked.due_at is None:
            # a stale due time written around the store: heal it
            conn.execute(this.values(due_at=None))
            continue
        if picked.listed:
            closed = {"status": ContactStatus.DNC.value, "next_attempt_at": None, "due_at": None}
            conn.execute(this.values(**closed))
            continue
        attempt = new_attempt(
            conn,
            picked.id,
            params["campaign"],
            campaign_name=params["campaign_name"],
            dialer_id=params["dialer"],
            is_test=params["is_test"],
            now=params["now"],
            only_if_due=True,
        )
        if attempt is not None:
            return in_flight, picked, attempt


@dataclass(frozen=True)
class NextDue:
    """When a claim may next succeed, and what next-due closed or reopened on the way."""

    at: datetime | None  #: None: nothing waiting will ever be dialable
    #: due contacts closed because their zones never share an open moment
    closed: int = 0
    #: contacts closed that way earlier whose zones share calling hours again (rule edit)
    reopened: int = 0


def next_due(ledger: Ledger, campaign: int, *, window: CallingWindow, now: datetime) -> NextDue:
    """The earliest moment any waiting contact is due and inside its calling hours.

    One `MIN(due_at)` probe per zone set, then the window's next opening per set
    (`next_open` is monotonic in its start, so a set's earliest due decides it).
    Contacts whose zones never share an open moment are closed with status
    `no_calling_hours` (`CallingWindow.next_open_ever`), so a campaign completes
    instead of waiting for ever; when the calling hours change so that they do, they
    are reopened here.
    """
    with ledger.session() as session:
        _serialise(session)
        sets = dict(_zone_sets(session))
        reopened = _reopen_hopeless(session, campaign, sets, window, now)
        earliest = {
            status: select(func.min(Contact.due_at))
            .where(
                Contact.campaign_id == campaign,
                Contact.zone_set_id == ZoneSet.id,
                Contact.status == status,
                Contact.due_at.is_not(None),
            )
            .scalar_subquery()
            for status in DUE_STATUSES
        }
        opens: list[datetime] = []
        hopeless: list[int] = []
        pending, retry = DUE_STATUSES
        rows = session.execute(select(ZoneSet.id, earliest[pending], earliest[retry]))
        for zs, first_pending, first_retry in rows:
            if first_pending is not None:
                start = now
            elif first_retry is not None:
                start = max(now, first_retry)
            else:
                continue
            at = window.next_open_ever(sets[zs], start)
            if at is None:
                hopeless.append(zs)
            else:
                opens.append(at)
        closed = 0
        if hopeless:
            result = session.execute(
                update(Contact)
                .where(
                    Contact.campaign_id == campaign,
                    Contact.zone_set_id.in_(hopeless),
                    Contact.due_at.is_not(None),
                )
                .values(status=ContactStatus.NO_CALLING_HOURS.value, due_at=None)
                .execution_options(synchronize_session=False)
            )
            closed = int(result.rowcount)  # type: ignore[attr-defined]
        return NextDue(min(opens) if opens else None, closed, reopened)


def _reopen_hopeless(
    session: Session,
    campaign: int,
    sets: dict[int, list[str]],
    window: CallingWindow,
    now: datetime,
) -> int:
    closed_sets = session.scalars(
        select(Contact.zone_set_id)
        .where(
            Contact.campaign_id == campaign,
            Contact.status == ContactStatus.NO_CALLING_HOURS.value,
        )
        .distinct()
    ).all()
    hopeful = [zs for zs in closed_sets if window.next_open_ever(sets[zs], now) is not None]
    if not hopeful:
        return 0
    result = session.execute(
        update(Contact)
        .where(
            Contact.campaign_id == campaign,
            Contact.status == ContactStatus.NO_CALLING_HOURS.value,
            Contact.zone_set_id.in_(hopeful),
        )
        .values(**_DUE_AGAIN)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


#: a closed contact made due again as it stood: pending if never attempted, else retry,
#: due at its retry time or, without one, since its import (so due now, in import order)
_DUE_AGAIN: dict[str, Any] = {
    "status": case(
        (Contact.last_outcome.is_(None), ContactStatus.PENDING.value),
        else_=ContactStatus.RETRY.value,
    ),
    "due_at": func.coalesce(Contact.next_attempt_at, Contact.created_at),
}


def on_dnc_list(ledger: Ledger, e164: str) -> bool:
    with ledger.session() as session:
        return session.get(DncEntry, e164) is not None


def campaign_status(ledger: Ledger, campaign: int) -> str:
    with ledger.session() as session:
        return session.scalar(select(Campaign.status).where(Campaign.id == campaign)) or ""


#: the guarded dial mark; with the DNC check in it for `start_dial`
_DIAL_MARK = (
    "UPDATE attempts SET dial_started_at = :at WHERE id = :attempt"
    f" AND status = '{AttemptStatus.DIALING.value}' AND dial_started_at IS NULL"
)
_MARK_DIAL = text(_DIAL_MARK).bindparams(bindparam("at", type_=UTCDateTime()))
_START_DIAL = text(
    f"{_DIAL_MARK} AND NOT EXISTS (SELECT 1 FROM dnc WHERE dnc.e164 = :e164)"
).bindparams(bindparam("at", type_=UTCDateTime()))
_LISTED = text("SELECT 1 FROM dnc WHERE e164 = :e164")
_MARK_ANSWERED = text(
    f"UPDATE attempts SET status='{AttemptStatus.IN_CALL.value}', answered_at = :at"
    f" WHERE id = :attempt AND status = '{AttemptStatus.DIALING.value}'"
).bindparams(bindparam("at", type_=UTCDateTime()))


def mark_dial_started(ledger: Ledger, attempt_id: int, at: datetime) -> bool:
    """Record that the SIP call is about to be placed. False: someone else owns the attempt now."""
    with ledger.transaction() as conn:
        result = conn.execute(_MARK_DIAL, {"attempt": attempt_id, "at": at})
        return bool(result.rowcount)


#: how `start_dial` went: marked; refused, the number is on the DNC list (the attempt is
#: left undialed); refused, someone else owns the attempt now (reconciled elsewhere)
DialStart = Literal["started", "on_dnc_list", "taken"]


def start_dial(ledger: Ledger, attempt_id: int, e164: str, at: datetime) -> DialStart:
    """`mark_dial_started` and the dial-time DNC check in one guarded update; only a
    refusal takes a second statement, to say why."""
    with ledger.transaction() as conn:
        result = conn.execute(_START_DIAL, {"attempt": attempt_id, "at": at, "e164": e164})
        if result.rowcount:
            return "started"
        return "on_dnc_list" if conn.scalar(_LISTED, {"e164": e164}) is not None else "taken"


def mark_answered(ledger: Ledger, attempt_id: int, at: datetime) -> None:
    with ledger.transaction() as conn:
        conn.execute(_MARK_ANSWERED, {"attempt": attempt_id, "at": at})


def call_record(ledger: Ledger, attempt_id: int) -> CallView | None:
    with ledger.session() as session:
        record = session.scalar(select(CallRecord).where(CallRecord.attempt_id == attempt_id))
        if record is None:
            return None
        return CallView(
            amd_result=record.amd_result,
            disposition=record.disposition,
            end_reason=record.end_reason,
            added_to_dnc=record.added_to_dnc,
            answered_at=record.answered_at,
            ended_at=record.ended_at,
        )


Decide = Callable[[Outcome, int, int], tuple[ContactStatus, datetime | None]]


def finalise_attempt(
    ledger: Ledger,
    attempt_id: int,
    *,
    outcome: Outcome,
    ended_at: datetime,
    decide: Decide,
    sip_status_code: int | None = None,
    sip_status: str | None = None,
    error: str | None = None,
    answered_at: datetime | None = None,
    disposition: str | None = None,
    add_dnc: bool = False,
    only_undialed: bool = False,
) -> Finalised | None:
    """Close the attempt and move its contact on, once; None if it was already closed.

    `decide(outcome, dials, same_outcome)` returns the contact's next status and due
    time (the retry rules); the counts include this attempt. With `only_undialed` the
    update is guarded by `dialing AND dial_started_at IS NULL`: None means the owner
    dialed meanwhile (or closed it), so the attempt is not settled here.
    """
    params: dict[str, Any] = {
        "attempt": attempt_id,
        "outcome": outcome.value,
        "code": sip_status_code,
        "sip_status": sip_status,
        "error": error,
        "ended_at": ended_at,
        "answered_at": answered_at,
    }
    with ledger.transaction() as conn:
        _serialise(conn)
        # The attempt closed (guarded), its contact locked and read with its history:
        # one statement on PostgreSQL (its history is read before the close, so this
        # attempt is added below), two on SQLite. Then the contact moved on: one more.
        contact = _finish_query(ledger.is_postgres, only_undialed).first(conn, params)
        if contact is None:
            return None
        dials, same = int(contact.dials), int(contact.same)
        if ledger.is_postgres:
            dials += outcome.value not in UNDIALED_OUTCOMES
            same += 1
        status, next_at = decide(outcome, dials, same)
        if add_dnc:
            status, next_at = ContactStatus.DNC, None
            conn.execute(_ADD_DNC, {"e164": contact.e164, "stamp": utcnow()})
        cancelled = contact.campaign_status == CampaignStatus.CANCELLED.value
        if status == ContactStatus.RETRY and cancelled:
            status, next_at = ContactStatus.CANCELLED, None
        moved = {
            "contact": contact.id,
            "status": status.value,
            "next_at": next_at,
            "dials": dials,
            "outcome": outcome.value,
            "due_at": due_at_for(status.value, contact.is_test, next_at, contact.created_at),
            "disposition": disposition or None,
            "stamp": utcnow(),
        }
        conn.execute(_MOVE_CONTACT, moved)
        return Finalised(outcome, status.value, next_at, dials)


_ATTEMPT_COLUMNS = Attempt.__table__.c
#: an attempt closed, once (guarded: not done yet, or, `only_undialed`, never dialed)
_CLOSE_ATTEMPT = (
    f"UPDATE attempts SET status='{AttemptStatus.DONE.value}', outcome = :outcome,"
    " sip_status_code = :code, sip_status = :sip_status, error = :error,"
    " ended_at = :ended_at, answered_at = COALESCE(:answered_at, answered_at)"
    " WHERE id = :attempt AND {guard} RETURNING contact_id"
)
_GUARDS = {
    False: f"status != '{AttemptStatus.DONE.value}'",
    True: f"status = '{AttemptStatus.DIALING.value}' AND dial_started_at IS NULL",
}
#: the closed attempt's contact, with its campaign's status and its closed attempts
#: (dials: those that rang a phone; same: those with this outcome)
_CONTACT_HISTORY = (
    "SELECT c.id, c.e164, c.is_test, c.created_at, cp.status AS campaign_status,"
    " (SELECT count(*) FROM attempts AS a WHERE a.contact_id = c.id"
    f" AND a.status = '{AttemptStatus.DONE.value}'"
    f" AND a.outcome NOT IN ({', '.join(repr(o) for o in UNDIALED_OUTCOMES)})) AS dials,"
    " (SELECT count(*) FROM attempts AS a WHERE a.contact_id = c.id"
    f" AND a.status = '{AttemptStatus.DONE.value}' AND a.outcome = :outcome) AS same"
    " FROM contacts AS c JOIN campaigns AS cp ON cp.id = c.campaign_id"
)
_FINISH_PARAMS = (
    bindparam("sip_status", type_=_ATTEMPT_COLUMNS.sip_status.type),
    bindparam("ended_at", type_=UTCDateTime()),
    bindparam("answered_at", type_=UTCDateTime()),
)
_HISTORY_COLUMNS = (
    column("id", Integer),
    column("e164", String),
    column("is_test", Boolean),
    column("created_at", UTCDateTime()),
    column("campaign_status", String),
    column("dials", Integer),
    column("same", Integer),
)


class _Finish:
    """`finalise_attempt`'s first statement(s), on a connection."""

    def __init__(self, close: TextClause | TextualSelect, history: TextualSelect | None) -> None:
        self.close, self.history = close, history

    def first(self, conn: Connection, params: dict[str, Any]) -> Row[Any] | None:
        if self.history is None:  # PostgreSQL: one statement
            return conn.execute(self.close, params).first()
        done = conn.execute(self.close, params).first()
        if done is None:
            return None
        return conn.execute(self.history, {**params, "contact": done.contact_id}).first()


@lru_cache(maxsize=4)
def _finish_query(postgres: bool, only_undialed: bool) -> _Finish:
    close = _CLOSE_ATTEMPT.format(guard=_GUARDS[only_undialed])
    if postgres:
        # The campaign row's key-share lock waits while a claim holds the row, so this
        # close never commits between a claim's stamp (claimed_at, read once it holds
        # the row) and its count of calls in flight: that claim would take the freed
        # slot at a moment the ledger shows this call still up (one beyond the cap).
        # Finalises share the lock; they do not wait for each other.
        query = text(
            f"WITH done AS ({close}) {_CONTACT_HISTORY} JOIN done ON done.contact_id = c.id"
            " FOR UPDATE OF c FOR KEY SHARE OF cp"
        )
        return _Finish(query.columns(*_HISTORY_COLUMNS).bindparams(*_FINISH_PARAMS), None)
    history = text(f"{_CONTACT_HISTORY} WHERE c.id = :contact").columns(*_HISTORY_COLUMNS)
    return _Finish(text(close).bindparams(*_FINISH_PARAMS), history)


_ADD_DNC = text(
    "INSERT INTO dnc (e164, source, note, added_at)"
    " VALUES (:e164, 'agent', 'asked on a call', :stamp) ON CONFLICT DO NOTHING"
).bindparams(bindparam("stamp", type_=UTCDateTime()))
_MOVE_CONTACT = text(
    "UPDATE contacts SET status = :status, next_attempt_at = :next_at,"
    " attempts_count = :dials, last_outcome = :outcome, due_at = :due_at,"
    " disposition = COALESCE(:disposition, disposition), updated_at = :stamp"
    " WHERE id = :contact"
).bindparams(
    bindparam("next_at", type_=UTCDateTime()),
    bindparam("due_at", type_=UTCDateTime()),
    bindparam("disposition", type_=_contacts.disposition.type),
    bindparam("stamp", type_=UTCDateTime()),
)


def in_flight_attempts(ledger: Ledger, campaign: int) -> list[InFlight]:
    """Attempts left `dialing` or `in_call` (by this process, another, or a dead one),
    each with whether its owner's lease is current (by the database's clock), in one
    statement."""
    postgres = ledger.is_postgres
    with ledger.transaction() as conn:
        rows = conn.execute(
            _IN_FLIGHT_PG if postgres else _IN_FLIGHT_SQLITE,
            {"campaign": campaign} if postgres else {"campaign": campaign, "now": utcnow()},
        )
        return [InFlight(**row._mapping) for row in rows]


def _in_flight_query(now: str) -> TextualSelect:
    return text(
        "SELECT a.id AS attempt_id, a.contact_id, c.e164, a.status, a.room_name, a.dialer_id,"
        " a.claimed_at, a.dial_started_at, a.answered_at,"
        " EXISTS (SELECT 1 FROM dialer_leases AS l WHERE l.dialer_id = a.dialer_id"
        f" AND l.expires_at > {now}) AS owner_alive"
        " FROM attempts AS a JOIN contacts AS c ON c.id = a.contact_id"
        f" WHERE a.campaign_id = :campaign AND a.status IN ({', '.join(map(repr, IN_FLIGHT))})"
        " ORDER BY a.id"
    ).columns(
        column("attempt_id", Integer),
        column("contact_id", Integer),
        column("e164", String),
        column("status", String),
        column("room_name", String),
        column("dialer_id", String),
        column("claimed_at", UTCDateTime()),
        column("dial_started_at", UTCDateTime()),
        column("answered_at", UTCDateTime()),
        column("owner_alive", Boolean),
    )


_IN_FLIGHT_PG = _in_flight_query("clock_timestamp()")
_IN_FLIGHT_SQLITE = _in_flight_query(":now").bindparams(bindparam("now", type_=UTCDateTime()))


def contact_timezones(ledger: Ledger, contact_id: int) -> list[str]:
    with ledger.session() as session:
        zones = session.scalar(select(Contact.timezones).where(Contact.id == contact_id))
        return [str(z) for z in zones or []]


def close_dnc_contacts(ledger: Ledger, campaign: int) -> int:
    """Close waiting contacts whose number joined the DNC list; returns how many.

    Driven from the list: one seek in the campaign's number index per listed number,
    never a walk over the campaign's contacts.
    """
    with ledger.session() as session:
        result = session.execute(
            update(Contact)
            .where(
                Contact.campaign_id == campaign,
                Contact.e164.in_(select(DncEntry.e164)),
                Contact.is_test.is_(False),
                Contact.due_at.is_not(None),
            )
            .values(status=ContactStatus.DNC.value, next_attempt_at=None, due_at=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StatusChange:
    """What setting a campaign's status did."""

    previous: str
    #: waiting contacts closed (`cancelled`) by a cancel
    closed: int = 0
    #: contacts a resume after a cancel made due again
    reopened: int = 0


def set_campaign_status(ledger: Ledger, name: str, status: CampaignStatus) -> str:
    """Set a campaign's status; returns the previous one (see `change_campaign_status`)."""
    return change_campaign_status(ledger, name, status).previous


def change_campaign_status(ledger: Ledger, name: str, status: CampaignStatus) -> StatusChange:
    """Set a campaign's status, closing or reopening its waiting contacts to match.

    Cancelling closes every waiting contact as `cancelled` (a call in flight that would
    have been retried is closed the same way when it ends). Making a cancelled campaign
    active again reopens exactly those contacts, due at once, in their old order.
    """
    with ledger.session() as session:
        _serialise(session)
        campaign = session.scalar(select(Campaign).where(Campaign.name == name).with_for_update())
        if campaign is None:
            raise CampaignNotFound(f"no campaign named {name!r} in the ledger")
        previous = campaign.status
        campaign.status = status.value
        sheet_contacts = (Contact.campaign_id == campaign.id) & Contact.is_test.is_(False)
        closed = reopened = 0
        if status == CampaignStatus.CANCELLED:
            result = session.execute(
                update(Contact)
                .where(sheet_contacts, Contact.status.in_(DUE_STATUSES))
                .values(status=ContactStatus.CANCELLED.value, next_attempt_at=None, due_at=None)
                .execution_options(synchronize_session=False)
            )
            closed = int(result.rowcount)  # type: ignore[attr-defined]
        elif status == CampaignStatus.ACTIVE and previous == CampaignStatus.CANCELLED.value:
            result = session.execute(
                update(Contact)
                .where(sheet_contacts, Contact.status == ContactStatus.CANCELLED.value)
                .values(**_DUE_AGAIN)
                .execution_options(synchronize_session=False)
            )
            reopened = int(result.rowcount)  # type: ignore[attr-defined]
        return StatusChange(previous, closed, reopened)


def summary(ledger: Ledger, name: str) -> CampaignSummary:
    """Counts for `dialer status` and the live view."""
    with ledger.session() as session:
        campaign = session.scalar(select(Campaign).where(Campaign.name == name))
        if campaign is None:
            raise CampaignNotFound(f"no campaign named {name!r} in the ledger")
        result = CampaignSummary(name=name, status=campaign.status)
        # test calls (`dialer call`) have contacts of their own, left out of the counts
        real = (Contact.campaign_id == campaign.id) & Contact.is_test.is_(False)
        attempts = select(Attempt).join(Contact, Contact.id == Attempt.contact_id).where(real)
        for status, n in session.execute(
            select(Contact.status, func.count()).where(real).group_by(Contact.status)
        ):
            result.contacts[str(status)] = int(n)
        for outcome, n in session.execute(
            attempts.with_only_columns(Attempt.outcome, func.count())
            .where(Attempt.outcome.is_not(None))
            .group_by(Attempt.outcome)
        ):
            result.outcomes[str(outcome)] = int(n)
        result.in_flight = _in_flight_count(session, campaign.id)
        result.attempts = session.scalar(attempts.with_only_columns(func.count())) or 0
        dialed = attempts.with_only_columns(
            func.count(), func.min(Attempt.dial_started_at), func.max(Attempt.dial_started_at)
        ).where(Attempt.dial_started_at.is_not(None))
        count, first, last = session.execute(dialed).one()
        result.dials = int(count or 0)
        result.first_dial_at, result.last_dial_at = first, last
        result.next_attempt_at = session.scalar(
            select(func.min(Contact.next_attempt_at)).where(real, Contact.status.in_(DUE_STATUSES))
        )
        return result
