"""Excel files LibreOffice writes (XLSX, and the legacy XLS only it can produce here), read
as calamine reads them; these run LibreOffice, so they are integration tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from campaign.contacts import SheetError, read_sheet, reading, validate_sheet
from tests.sheets import (
    ADA_GRACE_ALAN,
    probe,
    same_as_calamine,
    write_xlsx,
    xlsx_with_stray_cell,
)

pytestmark = pytest.mark.integration


def _converted(source: Path, to: str) -> Path:
    """`source` saved by LibreOffice as `to` (xls, xlsx), beside it."""
    office = shutil.which("libreoffice") or shutil.which("soffice")
    if office is None:
        pytest.skip(f"libreoffice is not on PATH, so no .{to} file can be produced here")
    subprocess.run(
        [office, "--headless", "--convert-to", to, "--outdir", str(source.parent), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return source.with_suffix(f".{to}")


def test_xls_read_via_calamine(tmp_path: Path) -> None:
    source = write_xlsx(tmp_path / "legacy.xlsx", [["Name", "Phone"], ["Ann", 4155552683]])
    xls = _converted(source, "xls")
    assert xls.read_bytes()[:4] == b"\xd0\xcf\x11\xe0"
    result = validate_sheet(xls, region="US")
    assert [c.e164 for c in result.accepted] == ["+14155552683"]


def test_libreoffice_workbook_reads_as_calamine_reads_it(tmp_path: Path) -> None:
    source = tmp_path / "source.csv"
    source.write_text("Name,Phone,Plan\nAda,+1 212-736-0101,gold\nGrace,2127360111,\n")
    same_as_calamine(_converted(source, "xlsx"))


def test_xls_with_a_stray_cell_is_read_in_a_child_process(tmp_path: Path) -> None:
    xls = _converted(xlsx_with_stray_cell(tmp_path / "legacy.xlsx", "IV65536"), "xls")
    found = probe(xls)
    assert found["accepted"] == ADA_GRACE_ALAN


def test_a_reader_that_dies_is_a_one_line_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """calamine fills a 65,536 x 256 grid for a stray IV65536: more than 200 MiB."""
    xls = _converted(xlsx_with_stray_cell(tmp_path / "legacy.xlsx", "IV65536"), "xls")
    monkeypatch.setattr(reading, "_CHILD_MEMORY", 200 * 2**20)
    with pytest.raises(SheetError, match="most likely out of memory") as refused:
        read_sheet(xls)
    assert "\n" not in str(refused.value)
