"""Reading messy sheets (real files written by the tests) and the per-row rules."""

from __future__ import annotations

import gc
from pathlib import Path

import openpyxl
import pytest

from campaign.contacts import ContactRow, Reason, SheetError, read_sheet, validate_sheet
from tests.sheets import write_xlsx

pytestmark = pytest.mark.unit

ROWS = [
    ["Name", "Phone", "Company"],
    ["Ann Lee", "(415) 555-2671", "Acme"],
    ["Bob Ray", "212-555-0187", "Globex"],
]


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    text = "\n".join(delimiter.join(row) for row in ROWS) + "\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")
    assert [c.e164 for c in result.accepted] == ["+14155552671", "+12125550187"]
    assert result.accepted[0].name == "Ann Lee"
    assert result.accepted[0].variables == {"Company": "Acme"}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16"])
def test_encoding_is_detected(tmp_path: Path, encoding: str) -> None:
    text = "Nom;Téléphone;Ville\nRenée Müller;+33 1 42 68 53 00;Orléans\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text, encoding), region="FR")
    assert result.columns["phone"] == "Téléphone"
    (contact,) = result.accepted
    assert contact.name == "Renée Müller"
    assert contact.variables == {"Ville": "Orléans"}


def test_semicolon_sheet_with_decimal_commas_is_not_split_on_commas(tmp_path: Path) -> None:
    text = "Name;Telefon;Umsatz\nJan;030 1234567;1,5\nEva;+49 89 1234567;2,75\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="DE")
    assert [c.variables["Umsatz"] for c in result.accepted] == ["1,5", "2,75"]


def test_blank_rows_are_ignored_and_rows_keep_spreadsheet_numbers(tmp_path: Path) -> None:
    text = 'Name,Phone,Note\nAnn,(415) 555-2671,\n,,\n\nBob,n/a,"two\nlines"\nCy,212-555-0187,\n'
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")
    assert result.rows == 3
    assert [c.row for c in result.accepted] == [2, 6]  # header is row 1; blank rows 3-4 count
    assert [(r.row, r.reason) for r in result.rejected] == [(5, Reason.UNPARSEABLE)]


@pytest.mark.parametrize(
    "header",
    [
        "Phone",
        "Mobile",
        "Cell",
        "Tel.",
        "Telephone",
        "Phone Number",
        "Telefon",
        "Teléfono",
        "Téléphone",
        "Numero",
        "Número",
        "Handy",
        "Mobile Phone",
    ],
)
def test_phone_column_found_by_header(tmp_path: Path, header: str) -> None:
    text = f"ID,Name,{header}\n1001234,Ann,(415) 555-2671\n1001235,Bob,212-555-0187\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")
    assert result.columns["phone"] == header
    assert len(result.accepted) == 2


def test_phone_type_column_is_not_the_phone(tmp_path: Path) -> None:
    text = "Name,Phone Type,Contact\nAnn,mobile,(415) 555-2671\nBob,home,212-555-0187\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")
    assert result.columns["phone"] == "Contact"


def test_sheet_without_header_finds_columns_by_content(tmp_path: Path) -> None:
    text = "Ann Lee,Acme,(415) 555-2671\nBob Ray,Globex,212-555-0187\nCy Young,Initech,n/a\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")
    assert result.columns["phone"] == "C"
    assert result.columns["name"] == "A"
    assert [(c.row, c.name, c.variables) for c in result.accepted] == [
        (1, "Ann Lee", {"B": "Acme"}),  # no header: data starts at row 1
        (2, "Bob Ray", {"B": "Globex"}),
    ]
    assert [(r.row, r.reason) for r in result.rejected] == [(3, Reason.UNPARSEABLE)]


def test_unlabelled_phone_column_found_by_content(tmp_path: Path) -> None:
    text = "Name,Company,Whatever\nAnn,Acme,+44 20 7946 0958\nBob,Globex,07911 123456\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="GB")
    assert result.columns["phone"] == "Whatever"
    assert len(result.accepted) == 2


def test_no_phone_column_is_a_clear_error(tmp_path: Path) -> None:
    text = "Name,Company\nAnn,Acme\nBob,Globex\n"
    with pytest.raises(SheetError, match=r"no phone column found.*--phone-column"):
        validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")


@pytest.mark.parametrize("option", ["Other", "other", "C", "3"])
def test_phone_column_option_overrides(tmp_path: Path, option: str) -> None:
    text = "Name,Phone,Other\nAnn,(415) 555-2671,(212) 555-0187\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US", phone_column=option)
    assert [c.e164 for c in result.accepted] == ["+12125550187"]
    assert result.accepted[0].variables == {"Phone": "(415) 555-2671"}


def test_unknown_phone_column_option_lists_the_columns(tmp_path: Path) -> None:
    text = "Name,Phone\nAnn,(415) 555-2671\n"
    with pytest.raises(SheetError, match="no column 'Mobile'; columns: Name, Phone"):
        validate_sheet(write_csv(tmp_path / "s.csv", text), region="US", phone_column="Mobile")


def test_first_and_last_name_columns_are_joined(tmp_path: Path) -> None:
    text = "First Name,Last Name,Mobile\nAnn,Lee,(415) 555-2671\n"
    (contact,) = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US").accepted
    assert contact.name == "Ann Lee"
    assert contact.variables == {}


def test_second_phone_column_used_when_the_first_is_blank(tmp_path: Path) -> None:
    text = "Name,Mobile,Home Phone\nAnn,(415) 555-2671,\nBob,,212-555-0187\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")
    assert [c.e164 for c in result.accepted] == ["+14155552671", "+12125550187"]


def test_duplicates_report_the_row_they_repeat(tmp_path: Path) -> None:
    text = (
        "Name,Phone\nAnn,(415) 555-2671\nBob,212-555-0187\n"
        "Ann again,+1 415 555 2671\nAnn thrice,4155552671\n"
    )
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")
    assert [c.row for c in result.accepted] == [2, 3]
    assert [(d.row, d.e164, d.duplicate_of_row) for d in result.duplicates] == [
        (4, "+14155552671", 2),
        (5, "+14155552671", 2),
    ]


def test_do_not_call_numbers_are_rejected(tmp_path: Path) -> None:
    text = "Name,Phone\nAnn,(415) 555-2671\nBob,212-555-0187\n"
    result = validate_sheet(
        write_csv(tmp_path / "s.csv", text), region="US", dnc=frozenset({"+12125550187"})
    )
    assert [c.e164 for c in result.accepted] == ["+14155552671"]
    assert [(r.row, r.reason, r.e164) for r in result.rejected] == [
        (3, Reason.DO_NOT_CALL, "+12125550187")
    ]


def test_timezone_column_is_validated(tmp_path: Path) -> None:
    text = (
        "Name,Phone,Time Zone\n"
        "Ann,(415) 555-2671,america/chicago\n"
        "Bob,212-555-0187,Mars/Olympus\n"
        "Cy,+44 20 7946 0958,\n"
    )
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")
    assert [c.timezones for c in result.accepted] == [
        ("America/Los_Angeles", "America/Chicago"),  # the sheet's zone narrows the number's
        ("America/New_York",),  # unknown zone: the number's
        ("Europe/London",),  # blank: the number's
    ]
    assert result.warnings == [
        (3, "unknown time zone 'Mars/Olympus'; using the number's zones only")
    ]


def test_extension_column_is_used_when_the_cell_has_none(tmp_path: Path) -> None:
    text = "Name,Phone,Ext\nAnn,(415) 555-2671,12\nBob,212-555-0187 x9,5\n"
    result = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US")
    assert [c.extension for c in result.accepted] == ["12", "9"]


def test_json_shape(tmp_path: Path) -> None:
    text = "Name,Phone\nAnn,415-555-2671 x12\nAnn,4155552671\nBob,n/a\n"
    data = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US").to_json()
    assert data["rows"] == 3
    assert data["accepted"] == [
        {
            "row": 2,
            "e164": "+14155552671",
            "name": "Ann",
            "timezones": ["America/Los_Angeles"],
            "extension": "12",
        }
    ]
    assert data["duplicates"] == [{"row": 3, "e164": "+14155552671", "duplicate_of_row": 2}]
    assert data["rejected"] == [{"row": 4, "raw": "n/a", "reason": "unparseable"}]


def test_progress_is_reported(tmp_path: Path) -> None:
    lines = ["Phone"] + [f"(415) 555-{i:04d}" for i in range(25_000)]
    seen: list[tuple[int, int]] = []
    validate_sheet(
        write_csv(tmp_path / "s.csv", "\n".join(lines)),
        region="US",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[0] == (0, 25_000) and seen[-1] == (25_000, 25_000)
    assert len(seen) >= 3


def test_accepted_rows_are_handed_on_while_checking_each_once_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an import's writer is given as the check goes: every accepted row once, in
    row order, a duplicate never (also when it repeats a row of an earlier run)."""
    from campaign.contacts import policy

    monkeypatch.setattr(policy, "_STREAM_EVERY", 10)
    lines = ["Name,Phone,Plan"]
    for i in range(95):
        phone = "n/a" if i % 11 == 4 else f"(415) 555-{(i - 7 if i % 9 == 8 else i):04d}"
        lines.append(f"P{i},{phone},p{i % 2}")
    runs: list[tuple[list[str], list[ContactRow]]] = []
    result = validate_sheet(
        write_csv(tmp_path / "s.csv", "\n".join(lines)),
        region="US",
        accepted_rows=lambda names, rows: runs.append((names, rows)),
    )
    assert len(runs) == 10 and all(names == ["Plan"] for names, _ in runs)
    handed = [row for _, rows in runs for row in rows]
    assert handed == list(result.accepted.rows())
    # 10 rows repeat the row 7 back, but one is itself unreadable and one repeats one
    assert len(result.duplicates) == 8 and len(result.rejected) == 9
    assert len({row[1] for row in handed}) == len(handed) == 95 - 8 - 9


# --------------------------------------------------------------------------- Excel


def test_xlsx_numeric_cells_are_read_as_digits(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "s.xlsx",
        [["Name", "Phone", "Score"], ["Ann", 4155552683, 1.5], ["Bob", 2125550187.0, 2]],
    )
    sheet = read_sheet(path)
    assert [row[1] for row in sheet.rows] == ["4155552683", "2125550187"]
    result = validate_sheet(sheet, region="US")
    assert [c.e164 for c in result.accepted] == ["+14155552683", "+12125550187"]
    assert [c.variables["Score"] for c in result.accepted] == ["1.5", "2"]


def test_xlsx_with_data_below_a_title_keeps_row_numbers(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "s.xlsx",
        [["Leads export"], [], ["Name", "Phone"], ["Ann", "'4155552671"], [], ["Bob", "n/a"]],
    )
    result = validate_sheet(path, region="US")
    # The title row above the header is skipped; rows keep the numbers Excel shows.
    assert result.columns["phone"] == "Phone"
    assert result.rows == 2
    assert [(c.row, c.e164) for c in result.accepted] == [(4, "+14155552671")]
    assert [(r.row, r.reason) for r in result.rejected] == [(6, Reason.UNPARSEABLE)]


def test_named_excel_sheet_is_read(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    workbook = openpyxl.Workbook()
    first = workbook.active
    assert first is not None
    first.append(["Notes"])
    second = workbook.create_sheet("Leads")
    second.append(["Name", "Mobile"])
    second.append(["Ann", "07911 123456"])
    workbook.save(path)
    result = validate_sheet(path, region="GB", sheet="leads")
    assert [c.e164 for c in result.accepted] == ["+447911123456"]
    with pytest.raises(SheetError, match="no sheet named 'Nope'; sheets: Sheet, Leads"):
        read_sheet(path, sheet="Nope")


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SheetError, match="no such file"):
        read_sheet(tmp_path / "nope.csv")


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SheetError, match="the sheet is empty"):
        read_sheet(write_csv(tmp_path / "s.csv", "\n\n ,\n"))


def test_corrupt_xlsx(tmp_path: Path) -> None:
    path = tmp_path / "s.xlsx"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(SheetError, match="not a readable Excel file"):
        read_sheet(path)


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b"\x00\x01\x02phone\x00")
    with pytest.raises(SheetError, match="binary data"):
        read_sheet(path)


def test_accepted_contacts_read_like_a_list(tmp_path: Path) -> None:
    text = (
        "Name,Phone,City\n"
        "Ann,(415) 555-2671,SF\n"
        "Bob,212-555-0187,NY\n"
        "Cy,n/a,LA\n"
        "Dee,+44 7911 123456,London\n"
    )
    accepted = validate_sheet(write_csv(tmp_path / "s.csv", text), region="US").accepted
    everyone = list(accepted)
    assert len(accepted) == 3
    assert [(c.row, c.name, c.variables) for c in everyone] == [
        (2, "Ann", {"City": "SF"}),
        (3, "Bob", {"City": "NY"}),
        (5, "Dee", {"City": "London"}),
    ]
    assert accepted[-1] == everyone[2]
    assert accepted[1:] == everyone[1:]
    assert accepted.e164s() == ["+14155552671", "+12125550187", "+447911123456"]
    with pytest.raises(IndexError):
        accepted[3]


@pytest.mark.parametrize("enabled", [True, False])
def test_checking_leaves_the_garbage_collector_as_it_was(tmp_path: Path, enabled: bool) -> None:
    path = write_csv(tmp_path / "s.csv", "Name,Phone\nAnn,(415) 555-2671\n")
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        validate_sheet(path, region="US")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_checking_never_pauses_the_collector_for_other_threads(tmp_path: Path) -> None:
    """The scheduler checks sheets in threads: the collector keeps running for the rest of
    the process while a sheet is read and checked, and nothing of theirs is frozen."""
    rows = "".join(f"P{i},(415) 555-{i % 10_000:04d}\n" for i in range(25_000))
    path = write_csv(tmp_path / "s.csv", "Name,Phone\n" + rows)
    seen: list[tuple[bool, int]] = []
    frozen = gc.get_freeze_count()
    validate_sheet(
        path,
        region="US",
        progress=lambda done, total: seen.append((gc.isenabled(), gc.get_freeze_count())),
    )
    assert len(seen) >= 3  # reported mid-sheet, not only at the ends
    assert set(seen) == {(True, frozen)}
