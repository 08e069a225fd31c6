"""Preflight against a real ledger: the doctor's ledger check, and a test call's rows
(kept out of the campaign's counts, never claimed, no obstacle to a later import)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from campaign.call import CallError, check_number, default_config, resolve_config
from campaign.campaign_file import CampaignConfig, parse_campaign
from campaign.contacts import read_sheet
from campaign.outcomes import ContactStatus
from campaign.pacing import TokenBucket
from campaign.preflight import Status, check_ledger
from campaign.store import Contact, Ledger, open_ledger, test_calls
from campaign.store import dialing as store
from campaign.store.imports import add_dnc, campaign_counts, import_sheet
from campaign.windows import CallingWindow

pytestmark = pytest.mark.integration

ALWAYS = CallingWindow(start=0, end=24 * 60, days=frozenset(range(7)), override_legal_limits=True)
WED_NOON_NY = datetime(2026, 3, 4, 17, 0, tzinfo=UTC)  # Wednesday 12:00 in New York
WED_NIGHT_NY = datetime(2026, 3, 5, 3, 0, tzinfo=UTC)  # Wednesday 22:00 in New York
NY_NUMBER = "+12127360101"


# --------------------------------------------------------------------------- doctor: ledger


def test_ledger_check_reports_a_missing_file_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "none" / "ledger.db"
    check = check_ledger(f"sqlite:///{path}")
    assert check.status is Status.WARN  # the first import or run creates it
    assert check.detail == f"no ledger file at {path} yet"
    assert not path.exists() and not path.parent.exists()


def test_ledger_check_reports_an_unmigrated_ledger_and_does_not_migrate(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    sqlite3.connect(path).close()  # an empty database file
    url = f"sqlite:///{path}"
    check = check_ledger(url)
    assert check.status is Status.FAIL
    assert check.detail.endswith("is reachable but not migrated to the newest schema")
    assert not Ledger(url).is_current()  # still not migrated
    open_ledger(url).dispose()
    passed = check_ledger(url)
    assert (passed.status, passed.detail) == (Status.PASS, f"{url} is reachable and migrated")


def test_ledger_check_reports_an_unreachable_postgres_without_its_password() -> None:
    check = check_ledger("postgresql://dialer:s3cret@127.0.0.1:1/dialer")
    assert check.status is Status.FAIL
    assert check.detail.startswith(
        "cannot reach the ledger at postgresql://dialer:***@127.0.0.1:1/"
    )
    assert "s3cret" not in check.detail


# --------------------------------------------------------------------------- test call rows


def campaign_with_sheet(ledger: Ledger, name: str, numbers: list[str], folder: Path) -> int:
    path = folder / f"{name}.csv"
    path.write_text("name,phone\n" + "".join(f"P{i},{n}\n" for i, n in enumerate(numbers)))
    import_sheet(ledger, read_sheet(path), campaign=name, region="US", default_region="US")
    return store.campaign_id(ledger, name)


def place_test_row(ledger: Ledger, campaign_id: int, e164: str, name: str) -> store.Claimed:
    return test_calls.start_test_call(
        ledger,
        campaign_id,
        campaign_name=name,
        e164=e164,
        raw=e164,
        extension=None,
        name="Sam",
        variables={"plan": "gold"},
        timezones=["America/New_York"],
        dialer_id="host:1:abc",
        now=WED_NOON_NY,
    )


def test_a_test_call_is_kept_out_of_the_campaign(sqlite_ledger_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(sqlite_ledger_url)
    campaign = campaign_with_sheet(ledger, "spring", ["+12127360102"], tmp_path)
    claimed = place_test_row(ledger, campaign, NY_NUMBER, "spring")
    again = place_test_row(ledger, campaign, NY_NUMBER, "spring")
    # The claim's room naming; the same test contact, a new attempt number.
    assert claimed.room_name == f"spring-{claimed.contact_id}-1"
    assert (again.contact_id, again.number) == (claimed.contact_id, 2)
    assert claimed.is_test and claimed.variables == {"plan": "gold"}

    summary = store.summary(ledger, "spring")
    assert summary.contacts == {"pending": 1} and summary.attempts == 0
    [counts] = campaign_counts_of(ledger)
    assert counts == {"pending": 1}
    # A run never claims the test contact, even once it is due again.
    with ledger.session() as session:
        contact = session.get(Contact, claimed.contact_id)
        assert contact is not None and contact.is_test
        assert contact.zone_set_id is not None and contact.due_at is None
        contact.status = ContactStatus.RETRY.value
    result = store.claim_next(
        ledger,
        campaign,
        campaign_name="spring",
        dialer_id="host:2:def",
        now=WED_NOON_NY,
        wall=0.0,
        max_concurrent=10,
        bucket=TokenBucket(rate=100.0),
        window=ALWAYS,
    )
    assert result.claimed is not None and result.claimed.e164 == "+12127360102"
    assert (
        store.claim_next(
            ledger,
            campaign,
            campaign_name="spring",
            dialer_id="host:2:def",
            now=WED_NOON_NY,
            wall=1000.0,
            max_concurrent=10,
            bucket=TokenBucket(rate=100.0),
            window=ALWAYS,
        ).reason
        == "none_due"
    )
    assert store.next_due(ledger, campaign, window=ALWAYS, now=WED_NOON_NY).at is None
    ledger.dispose()


def campaign_counts_of(ledger: Ledger) -> list[dict[str, int]]:
    with ledger.session() as session:
        return [c.by_status for c in campaign_counts(session)]


def test_a_number_test_called_first_still_imports_from_a_sheet(
    sqlite_ledger_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(sqlite_ledger_url)
    campaign = campaign_with_sheet(ledger, "autumn", ["+12127360102"], tmp_path)
    place_test_row(ledger, campaign, NY_NUMBER, "autumn")
    campaign_with_sheet(ledger, "autumn", ["+12127360102", NY_NUMBER], tmp_path)
    with ledger.session() as session:
        rows = session.execute(
            select(Contact.e164, Contact.is_test).where(Contact.campaign_id == campaign)
        ).all()
    assert sorted(rows) == [
        ("+12127360101", False),
        ("+12127360101", True),
        ("+12127360102", False),
    ]
    assert store.summary(ledger, "autumn").contacts == {"pending": 2}
    ledger.dispose()


def test_call_result_reads_the_attempt(sqlite_ledger_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(sqlite_ledger_url)
    campaign = campaign_with_sheet(ledger, "summer", ["+12127360102"], tmp_path)
    claimed = place_test_row(ledger, campaign, NY_NUMBER, "summer")
    result = test_calls.call_result(ledger, claimed.attempt_id)
    assert (result.outcome, result.has_record, result.duration) == (None, False, None)
    assert result.room_name == claimed.room_name
    with pytest.raises(LookupError):
        test_calls.call_result(ledger, 10_000)
    ledger.dispose()


# --------------------------------------------------------------------------- the number


def all_day(name: str = "c") -> CampaignConfig:
    return CampaignConfig(
        name=name,
        contacts=[Path("-")],
        calling_hours={"start": "09:00", "end": "20:00", "days": "all"},  # type: ignore[arg-type]
    )


def test_check_number_takes_a_number_like_a_sheet_row(sqlite_ledger_url: str) -> None:
    ledger = open_ledger(sqlite_ledger_url)
    e164, extension, zones = check_number(ledger, all_day(), "(212) 736-0101 ext. 12", WED_NOON_NY)
    assert (e164, extension, zones) == (NY_NUMBER, "12", ["America/New_York"])
    with pytest.raises(CallError, match=r"'12345' is not dialable: invalid"):
        check_number(ledger, all_day(), "12345", WED_NOON_NY)
    with ledger.session() as session:
        add_dnc(session, [NY_NUMBER])
    with pytest.raises(CallError, match=r"^\+121\*\*\*01 is on the do-not-call list"):
        check_number(ledger, all_day(), NY_NUMBER, WED_NOON_NY)
    ledger.dispose()


def test_check_number_follows_the_calling_hours_in_the_numbers_zone(sqlite_ledger_url: str) -> None:
    ledger = open_ledger(sqlite_ledger_url)
    with pytest.raises(CallError) as closed:
        check_number(ledger, all_day(), NY_NUMBER, WED_NIGHT_NY)
    assert str(closed.value) == (
        "calling hours (09:00-20:00 mon,tue,wed,thu,fri,sat,sun) are closed for +121***01"
        " now (America/New_York Wed 22:00); they open at 2026-03-05 14:00 UTC"
    )
    ledger.dispose()


# --------------------------------------------------------------------------- which campaign


def test_resolve_config_from_a_stored_campaign_a_file_or_defaults(
    sqlite_ledger_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(sqlite_ledger_url)
    assert resolve_config(ledger, campaign=None, config_file=None) == default_config()
    with pytest.raises(CallError, match="not both"):
        resolve_config(ledger, campaign="x", config_file=tmp_path / "x.yaml")
    with pytest.raises(store.CampaignNotFound):
        resolve_config(ledger, campaign="nope", config_file=None)
    campaign_with_sheet(ledger, "imported", ["+12127360102"], tmp_path)
    with pytest.raises(CallError, match="has no stored campaign file yet"):
        resolve_config(ledger, campaign="imported", config_file=None)

    config = parse_campaign(
        {"name": "stored", "contacts": "s.csv", "ringing_timeout": "9s"},
        base_dir=tmp_path,
        source="stored.yaml",
    )
    store.ensure_campaign(ledger, "stored", region="US", config=config.model_dump(mode="json"))
    assert resolve_config(ledger, campaign="stored", config_file=None) == config
    ledger.dispose()
