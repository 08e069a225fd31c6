"""Uploaded contact sheets: read from a temporary file, never by the uploader's name.

The bytes are written to a fresh temporary file (our name, not theirs), read with
the same `read_sheet` / `validate_sheet` as `dialer check`, then the file is gone.
The uploader's file name is only a label: shown in pages, stored as the contacts'
source. CRM rows sent as JSON become the same `Sheet`.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from campaign.contacts import Sheet, SheetError, SheetResult, read_sheet, validate_sheet

#: placeholders in a script: `{name}`, `{Plan}`
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_ ]*)\}")
#: what every contact provides besides its sheet's columns
BUILT_IN_VARIABLES = frozenset({"name"})


def safe_label(filename: str | None) -> str:
    """A display label from an uploaded file's name: no folders, no control characters."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return base[:120] or "upload"


def source_of(label: str) -> str:
    """The contacts' `source` for an upload: marked, so it is never mistaken for a path."""
    return f"upload:{label}"


def read_upload(data: bytes, label: str, *, sheet: str | None = None) -> Sheet:
    """Parse uploaded bytes as a CSV or Excel sheet; errors name the label, not a path."""
    with tempfile.TemporaryDirectory(prefix="desk-upload-") as folder:
        path = Path(folder) / "sheet"
        path.write_bytes(data)
        try:
            parsed = read_sheet(path, sheet=sheet)
        except SheetError as exc:
            raise SheetError(str(exc).replace(str(path), label)) from None
    parsed.source = source_of(label)
    return parsed


def rows_sheet(rows: list[dict[str, Any]], label: str) -> Sheet:
    """JSON rows (a CRM's contacts) as a sheet: the keys of all rows are its columns."""
    if not rows:
        raise SheetError(f"{label}: no rows")
    headers: list[str] = []
    for row in rows:
        if not isinstance(row, dict):
            raise SheetError(f"{label}: each row must be an object of column -> value")
        for key in row:
            if str(key) not in headers:
                headers.append(str(key))
    table = [tuple("" if row.get(h) is None else str(row.get(h)) for h in headers) for row in rows]
    # Row numbers as a spreadsheet would show them below a header row.
    return Sheet(source_of(label), headers, table, list(range(2, len(rows) + 2)))


@dataclass(frozen=True)
class Placeholders:
    """The script's `{placeholders}` against what the sheet provides."""

    found: list[str]
    missing: list[str]


def placeholders(texts: list[str | None], columns: list[str]) -> Placeholders:
    """Which placeholders the script uses and which of them no column fills."""
    used: list[str] = []
    for text in texts:
        for match in _PLACEHOLDER.finditer(text or ""):
            if match.group(1) not in used:
                used.append(match.group(1))
    known = set(columns) | BUILT_IN_VARIABLES
    return Placeholders(used, [name for name in used if name not in known])


@dataclass(frozen=True)
class Preview:
    """What the new-campaign page shows for an upload."""

    label: str
    headers: list[str]
    result: SheetResult

    @property
    def phone_header(self) -> str:
        return str(self.result.columns.get("phone") or "")


def preview(
    data: bytes, label: str, *, region: str, phone_column: str | None, dnc: set[str]
) -> Preview:
    sheet = read_upload(data, label)
    result = validate_sheet(sheet, region=region, phone_column=phone_column or None, dnc=dnc)
    return Preview(label, list(sheet.headers), result)
