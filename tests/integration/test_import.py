"""Importing checked sheets into the ledger: idempotent, deduplicated per campaign, DNC applied."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from campaign.contacts import read_sheet, validate_sheet
from campaign.outcomes import ContactStatus
from campaign.store import Contact, Rejection, dialing, open_ledger
from campaign.store import imports as import_store

pytestmark = pytest.mark.integration

SHEET = (
    "First Name,Last Name,Phone,Plan\n"
    "Ann,Lee,(415) 555-2671 x12,gold\n"
    "Bob,Ray,212-555-0187,silver\n"
    "Ann,Lee,+1 415 555 2671,gold\n"
    "Cy,Young,n/a,bronze\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def contacts(any_ledger_url: str, campaign: str) -> list[Contact]:
    ledger = open_ledger(any_ledger_url, migrate=False)
    with ledger.session() as session:
        campaign_id = import_store.get_or_create_campaign(session, campaign, "US").id
        return list(
            session.scalars(
                select(Contact).where(Contact.campaign_id == campaign_id).order_by(Contact.id)
            )
        )


def test_import_writes_contacts_and_rejections(any_ledger_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(any_ledger_url)
    sheet = read_sheet(write(tmp_path / "leads.csv", SHEET))
    summary, _ = import_store.import_sheet(
        ledger, sheet, campaign="spring", region=None, default_region="US"
    )
    assert (summary.rows, summary.new, summary.already_present) == (4, 2, 0)
    assert (summary.duplicates, summary.rejected, summary.dnc) == (1, 1, 0)
    ann, bob = contacts(any_ledger_url, "spring")
    assert (ann.e164, ann.name, ann.extension, ann.source_row) == (
        "+14155552671",
        "Ann Lee",
        "12",
        2,
    )
    assert ann.timezones == ["America/Los_Angeles"]
    assert ann.variables == {"Plan": "gold"}
    assert ann.status == ContactStatus.PENDING
    assert ann.source == str((tmp_path / "leads.csv").resolve())
    assert bob.e164 == "+12125550187"
    with ledger.session() as session:
        rejections = session.scalars(select(Rejection).order_by(Rejection.source_row)).all()
        assert [(r.source_row, r.reason, r.duplicate_of_row) for r in rejections] == [
            (4, "duplicate", 2),
            (5, "unparseable", None),
        ]
        assert rejections[1].cells["First Name"] == "Cy"


def test_importing_the_same_sheet_twice_adds_nothing(any_ledger_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(any_ledger_url)
    sheet = read_sheet(write(tmp_path / "leads.csv", SHEET))
    import_store.import_sheet(ledger, sheet, campaign="spring", region="US", default_region="US")
    again, _ = import_store.import_sheet(
        ledger, sheet, campaign="spring", region="US", default_region="US"
    )
    assert (again.new, again.already_present) == (0, 2)
    assert len(contacts(any_ledger_url, "spring")) == 2
    with ledger.session() as session:
        assert len(session.scalars(select(Rejection)).all()) == 2  # replaced, not doubled


def test_dedupe_spans_sheets_of_one_campaign_but_not_campaigns(
    any_ledger_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(any_ledger_url)
    first = read_sheet(write(tmp_path / "a.csv", SHEET))
    second = read_sheet(
        write(tmp_path / "b.csv", "Name,Mobile\nAnn L.,4155552671\nDee,(646) 555-0100\n")
    )
    import_store.import_sheet(ledger, first, campaign="spring", region=None, default_region="US")
    summary, _ = import_store.import_sheet(
        ledger, second, campaign="spring", region=None, default_region="US"
    )
    assert (summary.new, summary.already_present) == (1, 1)
    assert [c.e164 for c in contacts(any_ledger_url, "spring")] == [
        "+14155552671",
        "+12125550187",
        "+16465550100",
    ]
    other, _ = import_store.import_sheet(
        ledger, second, campaign="autumn", region=None, default_region="US"
    )
    assert other.new == 2


def test_campaign_region_is_used_when_none_is_given(any_ledger_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(any_ledger_url)
    gb = read_sheet(write(tmp_path / "gb.csv", "Name,Phone\nAnn,07911 123456\n"))
    import_store.import_sheet(ledger, gb, campaign="uk", region="GB", default_region="US")
    more = read_sheet(write(tmp_path / "gb2.csv", "Name,Phone\nBob,020 7946 0958\n"))
    summary, result = import_store.import_sheet(
        ledger, more, campaign="uk", region=None, default_region="US"
    )
    assert result.region == "GB"
    assert summary.new == 1


def test_dnc_list_is_applied_at_import(any_ledger_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(any_ledger_url)
    with ledger.session() as session:
        added = import_store.add_dnc(session, ["+12125550187", "+12125550187"], note="asked")
        assert (added.added, added.already_listed) == (1, 0)
    with ledger.session() as session:
        assert import_store.add_dnc(session, ["+12125550187"]).already_listed == 1
        assert import_store.is_dnc(session, "+12125550187")
        assert not import_store.is_dnc(session, "+14155552671")
        assert import_store.dnc_set(session) == {"+12125550187"}
    sheet = read_sheet(write(tmp_path / "leads.csv", SHEET))
    summary, _ = import_store.import_sheet(
        ledger, sheet, campaign="spring", region=None, default_region="US"
    )
    assert (summary.new, summary.dnc) == (1, 1)
    assert [c.e164 for c in contacts(any_ledger_url, "spring")] == ["+14155552671"]
    with ledger.session() as session:
        reasons = {r.source_row: r.reason for r in session.scalars(select(Rejection))}
        assert reasons[3] == "do_not_call"


def test_dnc_added_after_a_check_still_blocks_the_import(
    any_ledger_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(any_ledger_url)
    result = validate_sheet(write(tmp_path / "leads.csv", SHEET), region="US")
    with ledger.session() as session:
        import_store.add_dnc(session, ["+14155552671"])
    summary = import_store.import_contacts(ledger, "spring", result, "leads.csv")
    assert (summary.new, summary.dnc, summary.rejected) == (1, 1, 2)
    assert [c.e164 for c in contacts(any_ledger_url, "spring")] == ["+12125550187"]


def test_dnc_entries_remove_and_counts(any_ledger_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(any_ledger_url)
    with ledger.session() as session:
        import_store.add_dnc(session, ["+14155552671", "+12125550187"], source="import")
    with ledger.session() as session:
        assert [e.e164 for e in import_store.dnc_entries(session)] == [
            "+12125550187",
            "+14155552671",
        ]
        assert import_store.remove_dnc(session, ["+14155552671", "+19999999999"]) == 1
        assert import_store.dnc_set(session) == {"+12125550187"}
    sheet = read_sheet(write(tmp_path / "leads.csv", SHEET))
    import_store.import_sheet(ledger, sheet, campaign="spring", region=None, default_region="US")
    with ledger.session() as session:
        (counts,) = import_store.campaign_counts(session)
    assert (counts.name, counts.region, counts.contacts) == ("spring", "US", 1)
    assert counts.by_status == {"pending": 1}
    assert counts.rejections == 3  # duplicate, unparseable, do_not_call


def test_numbers_a_concurrent_import_wrote_first_are_skipped(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL copies straight into the table; a batch that meets a number another
    import committed after this one read the campaign's numbers goes the slow way."""
    ledger = open_ledger(postgres_url)
    first = validate_sheet(
        write(tmp_path / "a.csv", "Phone\n212-555-0187\n415-555-2671\n"), region="US"
    )
    second = validate_sheet(
        write(tmp_path / "b.csv", "Phone\n650-555-0100\n415-555-2671\n305-555-0199\n"),
        region="US",
    )
    with ledger.session() as session:
        import_store.get_or_create_campaign(session, "spring", "US")
    resolve = import_store.zone_set_ids
    meanwhile: list[import_store.ImportSummary] = []
    started: list[bool] = []

    def zone_set_ids_after_the_other_import(session: Any, keys: Any) -> Any:
        if not started:  # the second import has read the campaign's numbers by now
            started.append(True)
            other = open_ledger(postgres_url, migrate=False)
            meanwhile.append(import_store.import_contacts(other, "spring", first, "a.csv"))
            other.dispose()
        return resolve(session, keys)

    monkeypatch.setattr(import_store, "zone_set_ids", zone_set_ids_after_the_other_import)
    import_store.import_contacts(ledger, "spring", second, "b.csv")
    assert meanwhile and meanwhile[0].new == 2
    numbers = [c.e164 for c in contacts(postgres_url, "spring")]
    assert sorted(numbers) == ["+12125550187", "+13055550199", "+14155552671", "+16505550100"]
    again = import_store.import_contacts(ledger, "spring", second, "b.csv")
    assert (again.new, again.already_present) == (0, 3)


def test_two_processes_creating_one_new_campaign_both_get_it(pg_ledger_url: str) -> None:
    """A second writer that creates the same new campaign while the first has not
    committed yet waits for it and gets the same row, never an IntegrityError."""
    first, second = open_ledger(pg_ledger_url), open_ledger(pg_ledger_url, migrate=False)
    got: list[int] = []
    errors: list[BaseException] = []

    def start_the_same_campaign() -> None:
        try:
            got.append(dialing.ensure_campaign(second, "night", region="US", config={})[0])
        except BaseException as exc:  # the test reports what the other writer hit
            errors.append(exc)

    with first.session() as session:
        made = import_store.get_or_create_campaign(session, "night", "US").id
        other = threading.Thread(target=start_the_same_campaign)
        other.start()
        other.join(1.0)
        assert other.is_alive(), "the second writer did not wait for the first's commit"
    other.join(30)
    assert not errors and got == [made]
    second.dispose()


def test_imported_contacts_are_the_checked_sheets_contacts(
    any_ledger_url: str, tmp_path: Path
) -> None:
    """The import streams plain rows and encodes variables itself: what it stores is what
    the check reads (`ParsedContact`), its JSON text byte for byte as the ORM writes it."""
    text = (
        "Name,Phone,Plan,Note,Zone,Extra\n"
        'Zoë "Z",+14155552671,gold,"say ""hi""\\n\tthen, \u2603",America/Chicago,x\n'
        "Al,212-555-0187,,,\n"  # short: its last column missing
        "Bo,+442079460000,silver,\x7f\u00e9\U0001f600,,y\n"
    )
    sheet = read_sheet(write(tmp_path / "odd.csv", text))
    result = validate_sheet(sheet, region="US")
    ledger = open_ledger(any_ledger_url)
    import_store.import_contacts(ledger, "odd", result, "odd.csv")
    stored = contacts(any_ledger_url, "odd")
    expected = list(result.accepted)
    assert len(stored) == len(expected) == 3
    for contact, parsed in zip(stored, expected, strict=True):
        assert (contact.source_row, contact.e164, contact.raw_phone) == (
            parsed.row,
            parsed.e164,
            parsed.raw,
        )
        assert (contact.name, contact.extension) == (parsed.name, parsed.extension)
        assert contact.timezones == list(parsed.timezones)
        assert contact.variables == parsed.variables
    assert stored[0].timezones == ["America/Los_Angeles", "America/Chicago"]
    assert stored[1].variables == {"Plan": "", "Note": "", "Extra": ""}
    with ledger.engine.connect() as conn:
        query = "SELECT CAST(variables AS TEXT) FROM contacts ORDER BY id"
        texts = list(conn.exec_driver_sql(query).scalars())
    assert texts == [json.dumps(parsed.variables) for parsed in expected]
