"""A scheduled run imports what is new: changed sheets and sheets dropped into the inbox."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from campaign.inbox import InboxPaths, pick_up
from campaign.runner import dial_campaign
from campaign.scheduler import CampaignScheduler
from campaign.store import Contact, open_ledger
from campaign.store.db import LEDGER_FAULTS
from campaign.store.models import Rejection

# The engine requires LiveKit credentials; these runs end before any request is sent.
from tests.campaigns import FINISHED_CAMPAIGN_YAML

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("livekit_settings")]


@pytest.fixture
def service(any_ledger_url: str, tmp_path: Path) -> Iterator[CampaignScheduler]:
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "nightly.yaml").write_text(FINISHED_CAMPAIGN_YAML)
    (campaigns / "nightly.csv").write_text("Name,Phone\nAda,+1 212-736-0101\n")
    scheduler = CampaignScheduler(
        open_ledger(any_ledger_url),
        campaigns_dir=campaigns,
        reports_dir=tmp_path / "metrics_reports",
        dialer=dial_campaign,
        inbox_min_age_seconds=5,
    )
    yield scheduler
    scheduler.ledger.dispose()


def drop(folder: Path, name: str, content: str | bytes, *, age: float = 60) -> Path:
    """A sheet copied into the inbox `age` seconds ago."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    mtime = time.time() - age
    os.utime(path, (mtime, mtime))
    return path


def numbers(service: CampaignScheduler) -> dict[str, tuple[int, str]]:
    with service.ledger.session() as s:
        return {c.e164: (c.id, c.status) for c in s.scalars(select(Contact))}


def test_inbox_sheets_are_imported_and_moved_and_a_malformed_one_fails_with_a_note(
    service: CampaignScheduler,
) -> None:
    root = service.campaigns_dir / "nightly"
    drop(root / "inbox", "monday.csv", "Name,Phone\nGrace,(212) 736-0111\nAda,+1 212-736-0101\n")
    drop(root / "inbox", "broken.xlsx", b"PK\x03\x04 this is not a workbook")
    drop(root / "inbox", "notes.csv", "Name,Comment\nAda,likes engines\n")
    drop(root / "inbox", ".copying.csv", "Name,Phone\nAlan,212.736.0102\n")
    drop(root / "inbox", "late.csv", "Name,Phone\nAlan,212.736.0102\n", age=0)

    result = service.run("nightly")

    assert result.status == "done", result.line()
    assert (result.inbox_imported, result.inbox_failed) == (1, 2)
    assert result.new_contacts == 2  # Ada from the campaign sheet, Grace from the inbox
    assert set(numbers(service)) == {"+12127360101", "+12127360111"}

    processed = sorted(p.name for p in (root / "processed").iterdir())
    assert len(processed) == 1
    assert processed[0].endswith("Z-monday.csv")
    failed = sorted(p.name for p in (root / "failed").iterdir())
    assert len(failed) == 4
    broken_note = next(root.glob("failed/*-broken.xlsx.error.txt")).read_text()
    assert "not a readable Excel file" in broken_note
    notes_note = next(root.glob("failed/*-notes.csv.error.txt")).read_text()
    assert "phone" in notes_note.lower()
    # Hidden and still-being-written files wait for the next run.
    assert sorted(p.name for p in (root / "inbox").iterdir()) == [".copying.csv", "late.csv"]

    with service.ledger.session() as s:
        sources = set(s.scalars(select(Contact.source)))
    assert str(root / "processed" / processed[0]) in sources


def test_a_changed_sheet_adds_new_contacts_and_leaves_existing_ones_alone(
    service: CampaignScheduler,
) -> None:
    first = service.run("nightly")
    assert first.new_contacts == 1
    before = numbers(service)
    with service.ledger.session() as s:  # Ada was called and completed since
        s.execute(update(Contact).values(status="completed", attempts_count=1))

    sheet = service.campaigns_dir / "nightly.csv"
    sheet.write_text(sheet.read_text() + "Grace,(212) 736-0111\nNobody,call me maybe\n")
    second = service.run("nightly")

    assert second.status == "done", second.line()
    assert second.new_contacts == 1
    after = numbers(service)
    assert after["+12127360101"] == (before["+12127360101"][0], "completed")
    assert after["+12127360111"][1] == "pending"
    with service.ledger.session() as s:
        assert [r.reason for r in s.scalars(select(Rejection))] == ["unparseable"]

    third = service.run("nightly")  # nothing new: nothing changes
    assert third.new_contacts == 0
    assert numbers(service) == after


def test_the_same_file_name_dropped_every_day_never_collides(service: CampaignScheduler) -> None:
    root = service.campaigns_dir / "nightly"
    drop(root / "inbox", "contacts.csv", "Name,Phone\nGrace,(212) 736-0111\n", age=86_400 + 60)
    assert service.run("nightly").inbox_imported == 1
    drop(root / "inbox", "contacts.csv", "Name,Phone\nAlan,212.736.0102\n", age=60)
    assert service.run("nightly").inbox_imported == 1
    assert len(list((root / "processed").glob("*-contacts.csv"))) == 2
    assert {"+12127360111", "+12127360102"} <= set(numbers(service))


def stray_cell_xlsx(far: str) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in (["Name", "Phone"], ["Grace", "(212) 736-0111"], ["Alan", "212.736.0102"]):
        sheet.append(row)
    sheet[far] = "stray"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_hostile_inbox_sheets_never_stop_the_run(service: CampaignScheduler) -> None:
    root = service.campaigns_dir / "nightly"
    drop(root / "inbox", "crm.xlsx", stray_cell_xlsx("XFD1048576"))
    drop(root / "inbox", "unclosed.csv", 'Name,Phone\n"Alan,212.736.0102\nBob,212.736.0103\n')
    drop(root / "inbox", "binary.csv", b"Name,Phone\nAda\x00,+1 212-736-0101\n")
    started = time.monotonic()

    result = service.run("nightly")

    assert result.status == "done", result.line()
    assert time.monotonic() - started < 60
    assert (result.inbox_imported, result.inbox_failed) == (1, 2)
    assert result.dialer  # the engine ran after the failed sheets
    assert {"+12127360111", "+12127360102"} <= set(numbers(service))
    assert "+12127360103" not in numbers(service)  # nothing of a refused sheet is imported
    unclosed = next(root.glob("failed/*-unclosed.csv.error.txt")).read_text()
    assert "line 2: a quoted cell is never closed" in unclosed
    assert "line 2: a NUL byte" in next(root.glob("failed/*-binary.csv.error.txt")).read_text()
    assert list((root / "inbox").iterdir()) == []
    assert service.run("nightly").inbox_failed == 0  # they do not come back


def test_an_unreadable_campaign_sheet_is_that_sheets_error_not_the_runs(
    service: CampaignScheduler,
) -> None:
    (service.campaigns_dir / "nightly.csv").write_bytes(b'Name,Phone\n"Ada,+1 212-736-0101\n')
    result = service.run("nightly")
    assert result.status == "done", result.line()
    assert result.sheet_errors and "never closed" in result.sheet_errors[0]
    assert result.dialer


def test_any_failure_of_the_importer_sends_the_sheet_to_failed(tmp_path: Path) -> None:
    paths = InboxPaths(tmp_path / "c")
    drop(paths.inbox, "a.csv", "x")

    def buggy(path: Path, source: str) -> int:
        raise RuntimeError("the importer has a bug\nsecond line")

    picked = pick_up(paths, buggy, min_age_seconds=5, keep_on=(OperationalError,))
    ((target, reason),) = picked.failed
    assert reason == "RuntimeError: the importer has a bug second line"
    assert target.parent == paths.failed
    assert target.with_name(target.name + ".error.txt").read_text() == reason + "\n"


def test_a_ledger_fault_leaves_the_sheet_for_the_next_run(tmp_path: Path) -> None:
    paths = InboxPaths(tmp_path / "c")
    sheet = drop(paths.inbox, "a.csv", "x")

    def ledger_down(path: Path, source: str) -> int:
        raise OperationalError("INSERT", {}, Exception("connection refused"))

    with pytest.raises(OperationalError):
        pick_up(paths, ledger_down, min_age_seconds=5, keep_on=LEDGER_FAULTS)
    assert sheet.exists() and not paths.failed.exists()
