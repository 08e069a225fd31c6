"""Contact sheets: CSV / XLSX / XLS -> dialable contacts, duplicates and rejections.

`read_sheet` turns a file into strings (`reading`, `xlsx`, `sheet`); `validate_sheet`
finds the phone, name and time-zone columns (`columns`) and applies the number policy
to every row (`policy`); `normalise_number` does one number (`numbers`, and its
`fast_path`). Row numbers are as a spreadsheet shows them (header is row 1).

Speed: see docs/performance.md, "Ingest".
"""

from __future__ import annotations

from campaign.contacts.columns import Columns, find_columns, variable_columns
from campaign.contacts.errors import SheetError
from campaign.contacts.numbers import (
    MAX_E164,
    MAX_EXTENSION,
    NormalisedNumber,
    Reason,
    check_region,
    normalise_number,
)
from campaign.contacts.policy import (
    AcceptedContacts,
    AcceptedRows,
    ContactRow,
    Duplicate,
    ParsedContact,
    Progress,
    Rejected,
    SheetResult,
    validate_sheet,
)
from campaign.contacts.reading import read_sheet
from campaign.contacts.sheet import Row, Sheet, SheetLimits

__all__ = [
    "MAX_E164",
    "MAX_EXTENSION",
    "AcceptedContacts",
    "AcceptedRows",
    "Columns",
    "ContactRow",
    "Duplicate",
    "NormalisedNumber",
    "ParsedContact",
    "Progress",
    "Reason",
    "Rejected",
    "Row",
    "Sheet",
    "SheetError",
    "SheetLimits",
    "SheetResult",
    "check_region",
    "find_columns",
    "normalise_number",
    "read_sheet",
    "validate_sheet",
    "variable_columns",
]
