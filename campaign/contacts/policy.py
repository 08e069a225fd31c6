"""The validation policy for a whole sheet: every row accepted, a duplicate (the first row
with an E.164 wins) or rejected with its reason; nothing is written anywhere.

Each distinct cell is normalised once per sheet, and accepted contacts are built only
when they are read (`AcceptedContacts`).
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from campaign.contacts.columns import Columns, _zone_names, find_columns
from campaign.contacts.numbers import (
    MAX_EXTENSION,
    NormalisedNumber,
    Reason,
    _Normaliser,
    check_region,
)
from campaign.contacts.reading import read_sheet
from campaign.contacts.sheet import Row, Sheet

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(slots=True)
class ParsedContact:
    """A dialable row."""

    row: int
    e164: str
    raw: str
    extension: str | None
    name: str | None
    timezones: tuple[str, ...]
    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A row whose E.164 an earlier row of the sheet already has."""

    row: int
    e164: str
    raw: str
    duplicate_of_row: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row that cannot be dialed, with the reason."""

    row: int
    raw: str
    reason: Reason
    e164: str | None = None
    cells: dict[str, str] = field(default_factory=dict)


#: A `NormalisedNumber` as a sheet's memo keeps it: a plain tuple of strings (the reason
#: by its value). The collector stops tracking such a tuple after one look (never a
#: NamedTuple, nor one holding an enum member), and then the memo holding a million of them,
#: so a sheet's answers cost it nothing and it need not be paused, which would pause it for
#: every thread of the process.
_Answer = tuple[str, str | None, str | None, str | None, str | None, tuple[str, ...]]


class _Built(Sequence[_T]):
    """Rows of a result kept as plain tuples of strings and numbers (which the collector
    stops tracking after one look, see `_Answer`), each built into its record when read."""

    __slots__ = ("_build", "_items")

    def __init__(self, build: Callable[[tuple[Any, ...]], _T]) -> None:
        self._build = build
        self._items: list[tuple[Any, ...]] = []

    def add(self, *fields: Any) -> None:
        self._items.append(fields)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...

    def __getitem__(self, index: int | slice) -> _T | list[_T]:
        if isinstance(index, slice):
            return [self._build(item) for item in self._items[index]]
        return self._build(self._items[index])

    def __iter__(self) -> Iterator[_T]:
        return map(self._build, self._items)

    def __repr__(self) -> str:
        return f"<{len(self)} rows>"


#: An accepted contact as a plain tuple, the form an import writes it in:
#: (row, e164, raw, extension, name, timezones, values), `values` being the variable
#: columns' cells in `AcceptedContacts.variable_names` order.
ContactRow = tuple[int, str, str, str | None, str | None, tuple[str, ...], tuple[str, ...]]


class AcceptedContacts(_Built[ParsedContact]):
    """The dialable rows of a sheet; each becomes a `ParsedContact` when it is read.

    `dialer check` only counts them, and a million records with a dict of
    variables each would cost more than checking their numbers did. Each row is kept
    as (its index in `sheet.rows`, its number), added in row order; `rows()` gives
    them as plain tuples (`ContactRow`), without a record or a dict per contact.
    """

    __slots__ = ("_columns", "_sheet", "_values", "variable_names")

    def __init__(self, sheet: Sheet, columns: Columns) -> None:
        super().__init__(self._contact)
        self._sheet = sheet
        self._columns = columns
        self.variable_names = [sheet.headers[index] for index in columns.variables]
        self._values = _picker(columns.variables)

    def __repr__(self) -> str:
        return f"<{len(self)} accepted contacts of {self._sheet.source}>"

    def e164s(self) -> list[str]:
        return [e164 for _, (_, _, e164, *_) in self._items if e164]

    def rows(self) -> Iterator[ContactRow]:
        """Every accepted contact as a `ContactRow`, in row order."""
        return map(self._row, self._items)

    def rows_from(self, start: int) -> list[ContactRow]:
        """The accepted contacts from the `start`th on, as `ContactRow`s."""
        return [self._row(item) for item in self._items[start:]]

    def _row(self, item: tuple[Any, ...]) -> ContactRow:
        position, (raw, _, e164, extension, _, zones) = item
        row = self._sheet.rows[position]
        columns = self._columns
        assert e164 is not None
        if columns.timezone is not None:
            zones = _narrowed(zones, _zone_names().get(_cell(row, columns.timezone).casefold()))
        name = " ".join(cell for index in columns.name if (cell := _cell(row, index)))
        return (
            self._sheet.row_numbers[position],
            e164,
            raw,
            _extension(extension, row, columns),
            name or None,
            zones,
            self._values(row),
        )

    def _contact(self, item: tuple[Any, ...]) -> ParsedContact:
        number, e164, raw, extension, name, zones, values = self._row(item)
        variables = dict(zip(self.variable_names, values, strict=True))
        return ParsedContact(number, e164, raw, extension, name, zones, variables)


def _picker(indices: Sequence[int]) -> Callable[[Row], tuple[str, ...]]:
    """The cells at `indices` of a row as a tuple ("" past a short row's end)."""
    width = max(indices, default=-1) + 1
    if not indices:
        return lambda row: ()
    whole: Callable[[Row], Any]
    if len(indices) >= 2:
        whole = operator.itemgetter(*indices)
    else:
        only = indices[0]

        def whole(row: Row) -> tuple[str, ...]:
            return (row[only],)

    def pick(row: Row) -> tuple[str, ...]:
        if len(row) >= width:
            picked: tuple[str, ...] = whole(row)
            return picked
        return tuple(row[index] if index < len(row) else "" for index in indices)

    return pick


def _plain(number: NormalisedNumber) -> _Answer:
    raw, reason, e164, extension, number_type, zones = number
    return (raw, None if reason is None else reason.value, e164, extension, number_type, zones)


def _narrowed(number_zones: tuple[str, ...], stated: str | None) -> tuple[str, ...]:
    """A stated zone narrows the hours, never widens them: the window must be open in it
    and in every zone of the number (a +1 212 number stays in New York's hours)."""
    if stated is None or stated in number_zones:
        return number_zones
    return (*number_zones, stated)


def _extension(own: str | None, row: Row, columns: Columns) -> str | None:
    """The number's own extension, else the extension column's digits."""
    if own is not None or columns.extension is None:
        return own
    return re.sub(r"\D", "", _cell(row, columns.extension)) or None


def _cell(row: Row, index: int | None) -> str:
    return row[index].strip() if index is not None and index < len(row) else ""


@dataclass(slots=True)
class SheetResult:
    """What a sheet holds, row by row: accepted, duplicates and rejected."""

    source: str
    region: str
    rows: int
    columns: dict[str, Any]
    accepted: AcceptedContacts
    duplicates: Sequence[Duplicate] = ()
    rejected: Sequence[Rejected] = ()
    #: (row, message) for cells that were ignored, such as an unknown time zone
    warnings: list[tuple[int, str]] = field(default_factory=list)

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.rejected:
            counts[item.reason.value] = counts.get(item.reason.value, 0) + 1
        return counts

    def numbers(self) -> list[str]:
        """Every valid E.164 in the sheet, dialable or not (for the do-not-call list)."""
        found = self.accepted.e164s() + [d.e164 for d in self.duplicates]
        found += [r.e164 for r in self.rejected if r.e164 and r.reason in _VALID_REJECTIONS]
        return list(dict.fromkeys(found))

    def rows_without_number(self) -> list[Rejected]:
        """Rejected rows that hold no valid number at all."""
        return [r for r in self.rejected if r.reason not in _VALID_REJECTIONS]

    def to_json(self) -> dict[str, Any]:
        """The `dialer check --format json` object."""
        return {
            "rows": self.rows,
            "accepted": [
                {
                    "row": c.row,
                    "e164": c.e164,
                    "name": c.name,
                    "timezones": list(c.timezones),
                    "extension": c.extension,
                }
                for c in self.accepted
            ],
            "duplicates": [
                {"row": d.row, "e164": d.e164, "duplicate_of_row": d.duplicate_of_row}
                for d in self.duplicates
            ],
            "rejected": [
                {"row": r.row, "raw": r.raw, "reason": r.reason.value} for r in self.rejected
            ],
            "columns": self.columns,
            "warnings": [{"row": row, "message": message} for row, message in self.warnings],
        }


#: rejections of numbers that are valid in themselves
_VALID_REJECTIONS = frozenset({Reason.NOT_DIALABLE_TYPE, Reason.DO_NOT_CALL, Reason.BAD_EXTENSION})

Progress = Callable[[int, int], None]
#: what `validate_sheet` hands each run of newly accepted rows to (with the variable
#: columns' names), while it checks the rest
AcceptedRows = Callable[[list[str], list[ContactRow]], None]
_PROGRESS_EVERY = 10_000
#: rows checked between two runs of accepted rows handed on
_STREAM_EVERY = 20_000


def validate_sheet(
    source: str | Path | Sheet,
    *,
    region: str,
    phone_column: str | None = None,
    dnc: frozenset[str] | set[str] = frozenset(),
    sheet: str | None = None,
    progress: Progress | None = None,
    accepted_rows: AcceptedRows | None = None,
) -> SheetResult:
    """Apply the number policy to every row; nothing is written anywhere.

    `accepted_rows`, when given, is called while the sheet is checked with each run of
    newly accepted rows as `ContactRow`s, in row order: every accepted row once, the
    last run before this returns (an import writes them meanwhile).
    """
    region = check_region(region)
    data = source if isinstance(source, Sheet) else read_sheet(source, sheet=sheet)
    columns = find_columns(data, region, phone_column)
    headers, rows, row_numbers = data.headers, data.rows, data.row_numbers
    accepted = AcceptedContacts(data, columns)
    # Duplicates and rejected rows as plain tuples until read: a sheet may have a hundred
    # thousand of each, and as records they would keep the collector walking the sheet.
    duplicates: _Built[Duplicate] = _Built(lambda fields: Duplicate(*fields))
    rejected: _Built[Rejected] = _Built(
        lambda fields: Rejected(
            fields[0], fields[1], Reason(fields[2]), fields[3], _cells(headers, fields[4])
        )
    )
    result = SheetResult(
        data.source, region, len(rows), columns.describe(headers), accepted, duplicates, rejected
    )
    normaliser = _Normaliser(region)
    # Each distinct cell is normalised once per sheet (sheets repeat cells).
    memo: dict[str, _Answer] = {}
    first_row: dict[str, int] = {}
    zones = _zone_names()
    phone, fallbacks, tz_column = columns.phone, columns.phone_fallbacks, columns.timezone
    has_extension = columns.extension is not None
    total = len(rows)
    handed = 0  # accepted rows handed to `accepted_rows` so far
    for position, row in enumerate(rows):
        raw = row[phone] if phone < len(row) else ""
        if progress is not None and position % _PROGRESS_EVERY == 0:
            progress(position, total)
        if accepted_rows is not None and position % _STREAM_EVERY == 0 and position:
            accepted_rows(accepted.variable_names, accepted.rows_from(handed))
            handed = len(accepted)
        if fallbacks and not raw.strip():
            raw = next((row[i] for i in fallbacks if i < len(row) and row[i].strip()), raw)
        answer = memo.get(raw)
        if answer is None:
            answer = memo[raw] = _plain(normaliser(raw))
        _, why, e164, own_extension, _, _ = answer
        if why is not None or e164 is None or e164 in dnc:
            reason = why or (Reason.INVALID if e164 is None else Reason.DO_NOT_CALL).value
            rejected.add(row_numbers[position], raw, reason, e164, row)
            continue
        number = row_numbers[position]
        if has_extension or own_extension:
            extension = _extension(own_extension, row, columns)
            if extension is not None and len(extension) > MAX_EXTENSION:
                rejected.add(number, raw, Reason.BAD_EXTENSION.value, e164, row)
                continue
        earlier = first_row.setdefault(e164, number)
        if earlier != number:
            duplicates.add(number, e164, raw, earlier)
            continue
        accepted.add(position, answer)
        if tz_column is not None:
            cell = _cell(row, tz_column)
            if cell and cell.casefold() not in zones:
                result.warnings.append(
                    (number, f"unknown time zone {cell!r}; using the number's zones only")
                )
    if accepted_rows is not None and handed < len(accepted):
        accepted_rows(accepted.variable_names, accepted.rows_from(handed))
    if progress is not None:
        progress(total, total)
    logger.debug(
        "checked %s: %d rows, %d accepted, %d duplicates, %d rejected",
        data.source,
        result.rows,
        len(result.accepted),
        len(result.duplicates),
        len(result.rejected),
    )
    return result


def _cells(headers: list[str], row: Row) -> dict[str, str]:
    if len(row) == len(headers):
        return dict(zip(headers, row, strict=True))
    return {header: (row[i] if i < len(row) else "") for i, header in enumerate(headers)}
