"""Hostile rows into both ledgers: the import takes every row or refuses it with a reason,
never fails whole on one value; SQL errors never carry the row's values."""

from __future__ import annotations

import logging
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from campaign.contacts import Reason, read_sheet
from campaign.store import Contact, DncEntry, Rejection, open_ledger
from campaign.store import imports as import_store

pytestmark = pytest.mark.integration

LONG_NAME = "Ada " + "Lovelace" * 40  # 324 characters
HOSTILE = (
    "Name,Phone,Ext,Notes\n"
    f"{LONG_NAME},+1 212-736-0101,,gold\n"
    "Invalid,+880 12345678901234567,,an E.164 of 21 characters if it were kept\n"
    f"Long ext,+1 212-736-0111,{'7' * 25},\n"
    'Formula,+1 212-736-0102,,"=HYPERLINK(""http://x"",""y"")"\n'
    "Twenty,+1 212-736-0103,12345678901234567890,\n"
    "Text ext,+1 212-736-0104 ext. 1234567,,\n"
)


def deep_folder(root: Path) -> Path:
    """A sheet path longer than the 500 characters the ledger used to allow."""
    folder = root
    while len(str(folder)) < 520:
        folder = folder / ("deeply-nested-folder-" + "x" * 30)
    folder.mkdir(parents=True)
    return folder


def test_hostile_rows_import_whole(any_ledger_url: str, tmp_path: Path) -> None:
    path = deep_folder(tmp_path) / "hostile.csv"
    path.write_text(HOSTILE, encoding="utf-8")
    ledger = open_ledger(any_ledger_url)
    summary, result = import_store.import_sheet(
        ledger, read_sheet(path), campaign="hostile", region=None, default_region="US"
    )
    assert (summary.rows, summary.new, summary.rejected, summary.duplicates) == (6, 4, 2, 0)
    with ledger.session() as session:
        stored = {c.e164: c for c in session.scalars(select(Contact))}
        rejected = {r.source_row: r for r in session.scalars(select(Rejection))}
    assert stored["+12127360101"].name == LONG_NAME[:200]
    assert stored["+12127360103"].extension == "12345678901234567890"
    assert stored["+12127360104"].extension == "1234567"
    assert stored["+12127360102"].variables["Notes"] == '=HYPERLINK("http://x","y")'
    assert len(stored["+12127360101"].source) > 500
    assert (rejected[3].reason, rejected[3].e164) == (Reason.INVALID.value, None)
    assert (rejected[4].reason, rejected[4].e164) == (Reason.BAD_EXTENSION.value, "+12127360111")
    assert {r.reason for r in result.rejected} == {Reason.INVALID, Reason.BAD_EXTENSION}


def test_an_xlsx_with_a_stray_cell_imports_its_contacts(
    any_ledger_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "stray.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in (["Name", "Phone"], ["Ada", "+1 212-736-0101"], ["Grace", "(212) 736-0111"]):
        sheet.append(row)
    sheet["XFD1048576"] = "stray"
    workbook.save(path)
    ledger = open_ledger(any_ledger_url)
    summary, _ = import_store.import_sheet(
        ledger, read_sheet(path), campaign="stray", region=None, default_region="US"
    )
    assert (summary.new, summary.rejected) == (2, 1)  # the stray cell's row has no number


def test_sql_errors_carry_no_bound_values(
    any_ledger_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = open_ledger(any_ledger_url)
    with ledger.session() as session:
        session.add(DncEntry(e164="+14155552671", note="Ada Lovelace asked"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(IntegrityError) as raised, ledger.session() as session:
        session.add(DncEntry(e164="+14155552671", note="Ada Lovelace asked"))
    text = f"{raised.value}\n{raised.value.orig}\n{caplog.text}"
    assert "parameters hidden" in str(raised.value)
    for value in ("4155552671", "Ada Lovelace"):
        assert value not in text
