"""A sheet as strings (`Sheet`, one tuple per row), the limits a sheet is read within, and
what every reader shares."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from xlsxwriter.utility import xl_col_to_name

from campaign.contacts.errors import SheetError

#: one row of a sheet, as strings (tuples: smaller than lists, and the garbage
#: collector stops tracking a tuple of strings after one look, so a million rows
#: cost it nothing)
Row = tuple[str, ...]


@dataclass(slots=True)
class Sheet:
    """A sheet as strings. `row_numbers[i]` is the row a spreadsheet shows for `rows[i]`."""

    source: str
    headers: list[str]
    rows: list[Row]
    row_numbers: list[int]
    has_header: bool = True
    sheet_name: str | None = None
    #: header row as a spreadsheet numbers it (0 when the sheet has none)
    header_row: int = 1
    #: each column's spreadsheet letter (columns without data in between are left out)
    letters: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, index: int, limit: int | None = None) -> list[str]:
        rows = self.rows if limit is None else self.rows[:limit]
        return [row[index] if index < len(row) else "" for row in rows]


@dataclass(frozen=True, slots=True)
class SheetLimits:
    """How much of a sheet is read before it is refused (`DIALER_SHEET_MAX_ROWS`,
    `DIALER_SHEET_MAX_MB`). The size counts the bytes read: the file for CSV and XLS,
    the unpacked sheet and its strings for XLSX (a small file can unpack to gigabytes)."""

    max_rows: int = 1_000_000
    max_bytes: int = 512 * 2**20

    @classmethod
    def from_settings(cls) -> SheetLimits:
        from campaign.config import get_settings

        settings = get_settings()
        return cls(settings.sheet_max_rows, settings.sheet_max_mb * 2**20)


class _Records(NamedTuple):
    """What a reader hands `_to_sheet`: (row number, cells) pairs and the columns' letters."""

    rows: Iterable[tuple[int, list[str]]]
    sheet_name: str | None = None
    letters: list[str] | None = None  #: None: every column from A on


def _check_size(path: Path, size: int, limits: SheetLimits) -> None:
    if size > limits.max_bytes:
        raise SheetError(
            f"{path}: more than the {limits.max_bytes / 2**20:,.0f} MiB a sheet may have"
            " (DIALER_SHEET_MAX_MB); split it"
        )


def _too_many_rows(source: str, limits: SheetLimits) -> SheetError:
    return SheetError(
        f"{source}: more than {limits.max_rows:,} rows (DIALER_SHEET_MAX_ROWS); split the sheet"
    )


def _pick_sheet(path: Path, names: list[str], wanted: str) -> str:
    for name in names:
        if name == wanted or name.casefold() == wanted.strip().casefold():
            return name
    raise SheetError(f"{path}: no sheet named {wanted!r}; sheets: {', '.join(names)}")


def _excel_cell(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        # 4155552683.0 is the digits 4155552683, never 4.15555e9.
        return f"{value:.0f}" if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return "" if value is None else str(value)


def _dense(
    sparse: list[tuple[int, list[Any]]], used: set[int]
) -> tuple[list[tuple[int, list[str]]], list[str]]:
    """Rows of (column, value, column, value, ...) as lists over the columns in use.

    A cell far from the data (a stray `XFD1048576`) adds one column, not a grid."""
    columns = sorted(used)
    position = {column: index for index, column in enumerate(columns)}
    rows: list[tuple[int, list[str]]] = []
    for number, flat in sparse:
        at = flat[0::2]
        if columns[: len(at)] == at and position[at[-1]] == len(at) - 1:
            rows.append((number, flat[1::2]))  # no gap before the row's last value
            continue
        cells = [""] * (position[flat[-2]] + 1)
        for index in range(0, len(flat), 2):
            cells[position[flat[index]]] = flat[index + 1]
        rows.append((number, cells))
    return rows, [xl_col_to_name(column) for column in columns]
