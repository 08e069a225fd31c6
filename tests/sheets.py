"""Contact sheets the sheet tests share: the three contacts, workbooks holding them,
checking a sheet in a child process, and reading one through calamine to compare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openpyxl

from campaign.contacts import Sheet, SheetLimits, read_sheet, reading

CONTACTS = [
    ["Name", "Phone", "Plan"],
    ["Ada Lovelace", "+1 212-736-0101", "gold"],
    ["Grace Hopper", "(212) 736-0111", "basic"],
    ["Alan Turing", "212.736.0102", "gold"],
]

#: reads a sheet in a fresh interpreter and reports what it found and what it cost
_PROBE = """
import json, resource, sys, time
from campaign.contacts import validate_sheet
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.monotonic()
result = validate_sheet(sys.argv[1], region="US")
print(json.dumps({
    "accepted": [c.e164 for c in result.accepted],
    "rows": result.rows,
    "seconds": time.monotonic() - started,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "grew_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before,
}))
"""


def probe(path: Path) -> dict[str, object]:
    """Check a sheet in a child process: an abort (SIGABRT on a failed allocation) or a
    runaway read fails this test instead of killing pytest."""
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, f"exit {completed.returncode}: {completed.stderr[-2000:]}"
    data: dict[str, object] = json.loads(completed.stdout)
    return data


def xlsx_with_stray_cell(path: Path, stray: str, value: object = "x") -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in CONTACTS:
        sheet.append(row)
    sheet[stray] = value
    workbook.save(path)
    return path


ADA_GRACE_ALAN = ["+12127360101", "+12127360111", "+12127360102"]


def write_xlsx(path: Path, rows: list[list[object]], title: str = "Sheet1") -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = title
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def calamine_sheet(path: Path) -> Sheet:
    """The same file through calamine (in its child process), for comparison."""
    limits = SheetLimits()
    return reading._to_sheet(
        str(path), reading._calamine_records(path, None, limits, None), limits, None
    )


def same_as_calamine(path: Path) -> Sheet:
    ours = read_sheet(path)
    theirs = calamine_sheet(path)
    assert (ours.headers, ours.rows, ours.row_numbers) == (
        theirs.headers,
        theirs.rows,
        theirs.row_numbers,
    )
    return ours
