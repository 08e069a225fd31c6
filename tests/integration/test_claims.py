"""Claims by zone set and next-due, against the per-contact answer, on both ledgers.

The oracle is what the claim used to compute: `CallingWindow.is_open` and `next_open`
over every waiting contact, one by one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import Connection, event, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from campaign.cli import app
from campaign.config import get_settings
from campaign.contacts import read_sheet
from campaign.outcomes import CampaignStatus, ContactStatus, Outcome
from campaign.pacing import TokenBucket
from campaign.runner import control
from campaign.store import Contact, Ledger, open_ledger
from campaign.store import dialing as store
from campaign.store.db import alembic_config
from campaign.store.imports import import_sheet
from campaign.store.models import DUE_STATUSES, ZoneSet
from campaign.windows import CallingWindow, parse_days

pytestmark = pytest.mark.integration

#: zone lists as numbers and sheets give them: US coast to coast, several-zone
#: numbers, EU, AU, IN, none (the fallback zone), a repeat written in another order,
#: one that opens only while New York keeps winter time, and one that never opens
ZONE_MIXES: list[list[str]] = [
    [],
    ["America/New_York"],
    ["America/New_York", "America/Chicago"],
    ["America/Chicago", "America/New_York", "America/New_York"],
    ["America/Denver", "America/Phoenix"],
    ["America/Los_Angeles"],
    ["Pacific/Honolulu"],
    ["Europe/London"],
    ["Europe/Paris", "Europe/London"],
    ["Australia/Sydney"],
    ["Australia/Perth", "Australia/Sydney"],
    ["Asia/Kolkata"],
    ["Asia/Tokyo", "America/New_York"],
    ["Pacific/Auckland", "Europe/London"],
]
#: the daylight-saving changes of 2026 (UTC): US, EU, AU (Sydney back, then forward)
DST_CHANGES = [
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    datetime(2026, 4, 4, 16, 0, tzinfo=UTC),
    datetime(2026, 10, 3, 16, 0, tzinfo=UTC),
]
WINDOWS = [
    CallingWindow(),
    CallingWindow(
        start=8 * 60, end=21 * 60, days=parse_days("weekdays"), fallback_zone="Asia/Dubai"
    ),
    CallingWindow(start=12 * 60, end=13 * 60, days=parse_days("all")),
]
ALWAYS = CallingWindow(start=0, end=24 * 60, days=parse_days("all"), override_legal_limits=True)
NY = ["America/New_York"]
WED_10_NY = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)  # 10:00 New York, 00:00 Tokyo (Thu)


def instants(rng: random.Random) -> list[datetime]:
    """Hours around each DST change, some on a window's edge to the minute."""
    found: list[datetime] = []
    for change in DST_CHANGES:
        for hours in range(-36, 37, 9):
            at = change + timedelta(hours=hours + rng.random() * 9)
            found.append(at.replace(second=0, microsecond=0))
        found += [change - timedelta(minutes=1), change, change + timedelta(minutes=1)]
    return found


def claim(ledger: Ledger, campaign: int, now: datetime, window: CallingWindow) -> store.ClaimResult:
    return store.claim_next(
        ledger,
        campaign,
        campaign_name="c",
        dialer_id="test",
        now=now,
        wall=time.time(),
        max_concurrent=1000,
        bucket=TokenBucket(rate=1e6),
        window=window,
    )


@dataclass(frozen=True)
class Waiting:
    id: int
    zones: list[str]
    status: str
    retry_at: datetime | None
    created_at: datetime

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.retry_at or self.created_at, self.id)


def waiting(ledger: Ledger, campaign: int) -> list[Waiting]:
    with ledger.session() as session:
        rows = session.scalars(
            select(Contact).where(Contact.campaign_id == campaign, Contact.status.in_(DUE_STATUSES))
        ).all()
        return [
            Waiting(c.id, list(c.timezones), c.status, c.next_attempt_at, c.created_at)
            for c in rows
        ]


def expected_claim(contacts: list[Waiting], window: CallingWindow, now: datetime) -> int | None:
    due = [
        c
        for c in contacts
        if (c.status == "pending" or (c.retry_at or c.created_at) <= now)
        and window.is_open(c.zones, now)
    ]
    return min(due, key=lambda c: c.order).id if due else None


def expected_next(contacts: list[Waiting], window: CallingWindow, now: datetime) -> datetime | None:
    found = []
    for c in contacts:
        start = now if c.status == "pending" else max(now, c.retry_at or now)
        at = window.next_open(c.zones, start) or window.next_open(c.zones, start, 371)
        if at is not None:
            found.append(at)
    return min(found) if found else None


def seed(url: str, rng: random.Random, per_mix: int = 3) -> tuple[Ledger, int]:
    ledger = open_ledger(url)
    campaign, _ = store.ensure_campaign(ledger, "c", region="US", config={})
    with ledger.session() as session:
        n = 0
        for _ in range(per_mix):
            for zones in rng.sample(ZONE_MIXES, len(ZONE_MIXES)):
                n += 1
                session.add(Contact(campaign_id=campaign, e164=f"+1212555{n:04d}", timezones=zones))
    return ledger, campaign


@pytest.mark.parametrize("window", WINDOWS, ids=["default", "weekdays-8-21", "noon-hour"])
def test_claim_and_next_due_agree_with_every_contact_checked(
    any_ledger_url: str, window: CallingWindow
) -> None:
    rng = random.Random(17)
    ledger, campaign = seed(any_ledger_url, rng)
    checked = claimed = 0
    for now in instants(rng):
        contacts = waiting(ledger, campaign)
        want = expected_claim(contacts, window, now)
        result = claim(ledger, campaign, now, window)
        got = result.claimed.contact_id if result.claimed else None
        assert got == want, f"claim at {now.isoformat()}"
        if result.claimed is not None:
            claimed += 1
            # back to the pool as a retry due some hours either side of now
            retry_at = now + timedelta(minutes=rng.randint(-600, 600))
            store.finalise_attempt(
                ledger,
                result.claimed.attempt_id,
                outcome=Outcome.NO_ANSWER,
                ended_at=now,
                decide=lambda _o, _d, _s, at=retry_at: (ContactStatus.RETRY, at),
            )
        contacts = waiting(ledger, campaign)
        next_due = store.next_due(ledger, campaign, window=window, now=now)
        assert next_due.at == expected_next(contacts, window, now), f"next due at {now}"
        checked += 1
    assert claimed > 10 and checked > 50
    # The sets that never open were closed, with their reason, and nothing else was.
    hopeless = [
        sorted(set(z)) for z in ZONE_MIXES if window.next_open(z, DST_CHANGES[0], 371) is None
    ]
    if window == CallingWindow():
        assert hopeless == [["Europe/London", "Pacific/Auckland"]]
    with ledger.session() as session:
        closed = session.scalars(
            select(Contact.timezones).where(Contact.status == ContactStatus.NO_CALLING_HOURS.value)
        ).all()
    assert sorted(sorted(set(z)) for z in closed) == sorted(hopeless * 3)


def test_zone_sets_are_canonical_and_shared(any_ledger_url: str) -> None:
    ledger, _ = seed(any_ledger_url, random.Random(1), per_mix=2)
    with ledger.session() as session:
        sets = {tuple(z): i for i, z in session.execute(select(ZoneSet.id, ZoneSet.zones))}
        assert ("America/Chicago", "America/New_York") in sets
        assert () in sets and len(sets) == len(ZONE_MIXES) - 1  # one mix repeats another
        for contact in session.scalars(select(Contact)):
            assert contact.zone_set_id == sets[tuple(sorted(set(contact.timezones)))]
            assert contact.due_at == contact.created_at


def write_sheet(path: Path, phones: list[str]) -> Path:
    path.write_text("name,phone\n" + "".join(f"n{i},{p}\n" for i, p in enumerate(phones)))
    return path


@contextmanager
def locks_seen_at_commit(ledger: Ledger, campaign: int) -> Iterator[dict[str, Any]]:
    """What another PostgreSQL session sees locked while the claim's transaction commits."""
    seen: dict[str, Any] = {}
    url = make_url(ledger.url).set(drivername="postgresql").render_as_string(False)

    def look(_conn: Connection) -> None:
        with psycopg.connect(url, autocommit=True) as other:
            seen["contacts"] = [
                r[0]
                for r in other.execute(
                    "SELECT c.id FROM pgrowlocks('contacts') AS l"
                    " JOIN contacts AS c ON c.ctid = l.locked_row"
                )
            ]
            seen["campaigns"] = other.execute(
                "SELECT count(*) FROM pgrowlocks('campaigns')"
            ).fetchone()
            seen["tuple_locks"] = other.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'tuple'"
            ).fetchone()

    # the engine's commit event: fired before the commit is sent, whichever API made it
    event.listen(ledger.engine, "commit", look)
    try:
        yield seen
    finally:
        event.remove(ledger.engine, "commit", look)


def test_ten_thousand_closed_before_one_open(any_ledger_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(any_ledger_url)
    tokyo = [f"+8135{i:07d}" for i in range(10_000)]
    sheet = write_sheet(tmp_path / "list.csv", [*tokyo, "+12127360199"])
    summary, _ = import_sheet(
        ledger, read_sheet(sheet), campaign="c", region="US", default_region="US"
    )
    assert summary.new == 10_001
    campaign = store.campaign_id(ledger, "c")
    with ledger.engine.begin() as connection:  # the bulk path stores times as the ORM does
        stored = connection.execute(text("SELECT due_at, created_at FROM contacts")).first()
        with ledger.session() as session:
            session.add(
                Contact(campaign_id=campaign, e164="+81352999999", timezones=["Asia/Tokyo"])
            )
        orm = connection.execute(
            text("SELECT due_at, created_at FROM contacts WHERE e164 = '+81352999999'")
        ).one()
        assert stored is not None and [type(v) for v in stored] == [type(v) for v in orm]
        if not ledger.is_postgres:
            assert len(stored[0]) == len(orm[0]) == len("2026-03-04 15:00:00.000000")
    if ledger.is_postgres:
        with ledger.engine.begin() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS pgrowlocks"))
            connection.execute(text("ANALYZE contacts"))
        with locks_seen_at_commit(ledger, campaign) as seen:
            result = claim(ledger, campaign, WED_10_NY, CallingWindow())
    else:
        result = claim(ledger, campaign, WED_10_NY, CallingWindow())
    assert result.claimed is not None and result.claimed.e164 == "+12127360199"
    if ledger.is_postgres:
        # Exactly the claimed contact's row is locked, and the campaign's row; no waits.
        assert seen["contacts"] == [result.claimed.contact_id]
        assert seen["campaigns"] == (1,) and seen["tuple_locks"] == (0,)
    assert store.summary(ledger, "c").contacts == {"pending": 10_001, "in_progress": 1}
    assert claim(ledger, campaign, WED_10_NY, CallingWindow()).reason == "none_due"
    # Tokyo opens at 09:00 JST, 00:00 UTC on Thursday.
    assert store.next_due(ledger, campaign, window=CallingWindow(), now=WED_10_NY).at == datetime(
        2026, 3, 5, 0, 0, tzinfo=UTC
    )


def test_claim_probes_go_through_the_claim_index(any_ledger_url: str, tmp_path: Path) -> None:
    """The planner on each backend uses the partial index for the claim's probes."""
    ledger = open_ledger(any_ledger_url)
    sheet = write_sheet(tmp_path / "list.csv", [f"+1212736{i:04d}" for i in range(3000)])
    import_sheet(ledger, read_sheet(sheet), campaign="c", region="US", default_region="US")
    campaign = store.campaign_id(ledger, "c")
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "ORDER BY" in statement and "zone_set_id" in statement:
            statements.append((statement, parameters))

    if ledger.is_postgres:
        with ledger.engine.begin() as connection:
            connection.execute(text("ANALYZE contacts"))
    event.listen(ledger.engine, "before_cursor_execute", record)
    try:
        assert claim(ledger, campaign, WED_10_NY, CallingWindow()).claimed is not None
    finally:
        event.remove(ledger.engine, "before_cursor_execute", record)
    [(statement, parameters)] = statements
    explain = "EXPLAIN QUERY PLAN " if not ledger.is_postgres else "EXPLAIN "
    raw = ledger.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(explain + statement, parameters)
        plan = " ".join(str(row) for row in cursor.fetchall())
    finally:
        raw.close()
    assert "ix_contacts_claim" in plan, plan
    assert "SCAN contacts " not in plan + " " and "Seq Scan" not in plan, plan


def test_editing_calling_hours_between_runs_changes_who_is_due(any_ledger_url: str) -> None:
    ledger = open_ledger(any_ledger_url)
    campaign, _ = store.ensure_campaign(ledger, "c", region="US", config={})
    with ledger.session() as session:
        session.add(
            Contact(campaign_id=campaign, e164="+12127360001", timezones=["America/New_York"])
        )
        session.add(
            Contact(campaign_id=campaign, e164="+442079460001", timezones=["Europe/London"])
        )
    mornings = CallingWindow(start=9 * 60, end=12 * 60)
    afternoons = CallingWindow(start=13 * 60, end=20 * 60)
    at_1230 = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)  # 07:30 New York, 12:30 London
    assert store.next_due(ledger, campaign, window=mornings, now=at_1230).at == datetime(
        2026, 3, 4, 14, 0, tzinfo=UTC
    )
    assert store.next_due(ledger, campaign, window=afternoons, now=at_1230).at == datetime(
        2026, 3, 4, 13, 0, tzinfo=UTC
    )
    at_1430 = datetime(2026, 3, 4, 14, 30, tzinfo=UTC)  # 09:30 New York, 14:30 London
    first = claim(ledger, campaign, at_1430, mornings).claimed
    assert first is not None and first.e164 == "+12127360001"
    second = claim(ledger, campaign, at_1430, afternoons).claimed
    assert second is not None and second.e164 == "+442079460001"


def test_a_zone_set_with_no_common_hours_is_closed_then_reopened(any_ledger_url: str) -> None:
    ledger = open_ledger(any_ledger_url)
    campaign, _ = store.ensure_campaign(ledger, "c", region="US", config={})
    with ledger.session() as session:
        session.add(
            Contact(
                campaign_id=campaign,
                e164="+6495550001",
                timezones=["Pacific/Auckland", "Europe/London"],
            )
        )
    found = store.next_due(ledger, campaign, window=CallingWindow(), now=WED_10_NY)
    assert found == store.NextDue(at=None, closed=1, reopened=0)
    summary = store.summary(ledger, "c")
    assert summary.contacts == {"no_calling_hours": 1} and summary.remaining == 0
    # Wider hours (an operator's edit) reach it again: due at once.
    found = store.next_due(ledger, campaign, window=ALWAYS, now=WED_10_NY)
    assert found == store.NextDue(at=WED_10_NY, closed=0, reopened=1)
    result = claim(ledger, campaign, WED_10_NY, ALWAYS)
    assert result.claimed is not None and result.claimed.e164 == "+6495550001"


def test_resume_after_cancel_reopens_exactly_the_waiting_contacts(any_ledger_url: str) -> None:
    ledger = open_ledger(any_ledger_url)
    campaign, _ = store.ensure_campaign(ledger, "c", region="US", config={})
    with ledger.session() as session:
        for i in range(4):
            session.add(
                Contact(
                    campaign_id=campaign, e164=f"+1212736000{i}", timezones=["America/New_York"]
                )
            )
    in_flight = claim(ledger, campaign, WED_10_NY, ALWAYS).claimed
    retried = claim(ledger, campaign, WED_10_NY, ALWAYS).claimed
    done = claim(ledger, campaign, WED_10_NY, ALWAYS).claimed
    assert in_flight and retried and done
    later = WED_10_NY + timedelta(hours=2)
    for attempt, status, at in (
        (retried.attempt_id, ContactStatus.RETRY, later),
        (done.attempt_id, ContactStatus.COMPLETED, None),
    ):
        store.finalise_attempt(
            ledger,
            attempt,
            outcome=Outcome.NO_ANSWER,
            ended_at=WED_10_NY,
            decide=lambda _o, _d, _s, s=status, a=at: (s, a),
        )
    assert control(ledger, "c", "cancel") == (
        "campaign c: active -> cancelled; 2 waiting contact(s) closed as cancelled"
    )
    # The call in flight ends after the cancel: it would have been retried, so it closes too.
    store.finalise_attempt(
        ledger,
        in_flight.attempt_id,
        outcome=Outcome.NO_ANSWER,
        ended_at=WED_10_NY,
        decide=lambda _o, _d, _s: (ContactStatus.RETRY, later),
    )
    assert store.summary(ledger, "c").contacts == {"cancelled": 3, "completed": 1}
    assert claim(ledger, campaign, WED_10_NY, ALWAYS).reason == "inactive"

    assert control(ledger, "c", "resume") == (
        "campaign c: cancelled -> active; 3 cancelled contact(s) due again"
    )
    with ledger.session() as session:
        contacts = session.scalars(select(Contact).order_by(Contact.id)).all()
        statuses = [c.status for c in contacts]
        assert statuses == ["retry", "retry", "completed", "pending"]
        for contact in contacts:
            assert (contact.due_at is not None) == (contact.status in DUE_STATUSES)
        order = [c.id for c in contacts if c.status in DUE_STATUSES]
    # Due now (the retry time the cancel dropped is not restored), in their old order.
    got = [claim(ledger, campaign, datetime.now(UTC), ALWAYS).claimed for _ in range(3)]
    assert [c.contact_id for c in got if c] == order
    assert control(ledger, "c", "resume") == "campaign c is already active"


def test_cancel_and_resume_keep_test_call_contacts_out(any_ledger_url: str) -> None:
    ledger = open_ledger(any_ledger_url)
    campaign, _ = store.ensure_campaign(ledger, "c", region="US", config={})
    with ledger.session() as session:
        session.add(Contact(campaign_id=campaign, e164="+12127360001", is_test=True))
    change = store.change_campaign_status(ledger, "c", CampaignStatus.CANCELLED)
    assert change.closed == 0
    assert store.change_campaign_status(ledger, "c", CampaignStatus.ACTIVE).reopened == 0
    with ledger.session() as session:
        contact = session.scalars(select(Contact)).one()
        assert contact.status == "pending" and contact.due_at is None


def test_migration_backfills_zone_sets_and_due_times(any_ledger_url: str) -> None:
    ledger = open_ledger(any_ledger_url, migrate=False)
    with ledger.engine.begin() as connection:
        config = alembic_config(any_ledger_url)
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    # as each backend stores an aware UTC time
    utc = "+00:00" if ledger.is_postgres else ".000000"
    retry_at, created = f"2026-03-04 18:00:00{utc}", f"2026-03-01 09:00:00{utc}"
    rows = [
        ("+12127360001", '["America/New_York", "America/Chicago"]', "pending", None, False),
        ("+12127360002", '["America/Chicago", "America/New_York"]', "retry", retry_at, False),
        ("+12127360003", "[]", "completed", None, False),
        ("+12127360004", '["America/New_York"]', "pending", None, True),
    ]
    with ledger.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO campaigns (id, name, status, region, config, created_at, updated_at)"
                " VALUES (1, 'old', 'active', 'US', '{}', :at, :at)"
            ),
            {"at": created},
        )
        for e164, zones, status, next_at, is_test in rows:
            connection.execute(
                text(
                    "INSERT INTO contacts (campaign_id, e164, raw_phone, timezones, variables,"
                    " source, source_row, status, attempts_count, next_attempt_at, is_test,"
                    " created_at, updated_at) VALUES (1, :e164, '', :zones, '{}', '', 0,"
                    " :status, 0, :next_at, :is_test, :at, :at)"
                ),
                {"e164": e164, "zones": zones, "status": status, "next_at": next_at}
                | {"is_test": is_test, "at": created},
            )
    ledger.migrate()
    assert ledger.is_current()
    with ledger.session() as session:
        contacts = session.scalars(select(Contact).order_by(Contact.id)).all()
        sets = dict(session.execute(select(ZoneSet.id, ZoneSet.zones)).all())
    assert [sets[c.zone_set_id] for c in contacts] == [
        ["America/Chicago", "America/New_York"],
        ["America/Chicago", "America/New_York"],
        [],
        ["America/New_York"],
    ]
    created_at = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert [c.due_at for c in contacts] == [
        created_at,
        datetime(2026, 3, 4, 18, 0, tzinfo=UTC),
        None,
        None,
    ]
    campaign = store.campaign_id(ledger, "old")
    first = claim(ledger, campaign, WED_10_NY, ALWAYS).claimed
    assert first is not None and first.e164 == "+12127360001"
    assert claim(ledger, campaign, WED_10_NY, ALWAYS).reason == "none_due"


def test_dialer_cancel_then_resume_on_the_command_line(any_ledger_url: str, tmp_path: Path) -> None:
    get_settings.cache_clear()  # settings are read once per process; this test has its ledger
    runner = CliRunner(env={"DIALER_DATABASE_URL": any_ledger_url, "DIALER_LOG_LEVEL": "WARNING"})
    try:
        sheet = write_sheet(tmp_path / "list.csv", ["+12127360101", "+12127360102"])
        assert runner.invoke(app, ["import", str(sheet), "--campaign", "c"]).exit_code == 0
        said = []
        for action in ("cancel", "resume", "resume"):
            result = runner.invoke(app, [action, "c"])
            assert result.exit_code == 0, result.output
            said.append(" ".join(result.output.split()))
    finally:
        get_settings.cache_clear()
    assert said == [
        "campaign c: active -> cancelled; 2 waiting contact(s) closed as cancelled",
        "campaign c: cancelled -> active; 2 cancelled contact(s) due again",
        "campaign c is already active",
    ]
