"""Reading a sheet as strings: CSV (delimiter and encoding sniffed, refused whole rather
than partly read), XLSX (`campaign.contacts.xlsx`), XLS / ODS / XLSB (calamine, in a child
process with a memory cap); blank rows, title rows and empty columns left out."""

from __future__ import annotations

import csv
import io
import pickle
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from xlsxwriter.utility import xl_col_to_name

from campaign.contacts.errors import SheetError
from campaign.contacts.sheet import (
    Row,
    Sheet,
    SheetLimits,
    _check_size,
    _dense,
    _excel_cell,
    _pick_sheet,
    _Records,
    _too_many_rows,
)
from campaign.contacts.xlsx import _is_xlsx, _xlsx_records

_XLSX_MAGIC = b"PK\x03\x04"
_XLS_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_DELIMITERS = (",", ";", "\t", "|")


def read_sheet(
    path: str | Path,
    *,
    sheet: str | None = None,
    limits: SheetLimits | None = None,
    preview: int | None = None,
) -> Sheet:
    """Read a CSV, XLSX, XLS or ODS file as strings; blank rows are left out.

    Reading costs what the cells holding data cost, never the sheet's stated size.
    `preview` reads only the first rows (to see the columns); `limits` default to the
    settings'. SheetError when the file cannot be read whole and correctly.
    """
    return _read_sheet(Path(path), sheet, limits or SheetLimits.from_settings(), preview)


def _read_sheet(path: Path, sheet: str | None, limits: SheetLimits, preview: int | None) -> Sheet:
    if not path.exists():
        raise SheetError(f"{path}: no such file")
    if path.is_dir():
        raise SheetError(f"{path}: is a directory, not a sheet")
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
        size = path.stat().st_size
    except OSError as exc:
        raise SheetError(f"{path}: cannot read ({exc.strerror})") from None
    if head.startswith(_XLSX_MAGIC) and _is_xlsx(path):
        records = _xlsx_records(path, sheet, limits, preview)
    elif head.startswith((_XLSX_MAGIC, _XLS_MAGIC)):
        _check_size(path, size, limits)
        records = _calamine_records(path, sheet, limits, preview)
    elif sheet is not None:
        raise SheetError(f"{path}: --sheet applies to Excel files, this is a text file")
    else:
        _check_size(path, size, limits)
        records = _Records(_csv_records(path, limits))
    return _to_sheet(str(path), records, limits, preview)


# --- XLS, ODS, XLSB: calamine, in a child process ------------------------------------

#: what the child may use: calamine fills a grid as big as the sheet says it is, and a
#: failed allocation aborts the process it runs in
_CHILD_MEMORY = 2 * 2**30
_CHILD_SECONDS = 300


def _calamine_records(
    path: Path, wanted: str | None, limits: SheetLimits, preview: int | None
) -> _Records:
    request = pickle.dumps((str(path), wanted, limits.max_rows, preview, _CHILD_MEMORY))
    try:
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                "from campaign.contacts.reading import _calamine_child; _calamine_child()",
            ],
            input=request,
            capture_output=True,
            timeout=_CHILD_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SheetError(
            f"{path}: reading took more than {_CHILD_SECONDS} s; split the sheet"
        ) from None
    if completed.returncode != 0:
        if completed.returncode < 0:
            cause = f"the reader stopped ({signal.Signals(-completed.returncode).name})"
        else:
            cause = f"the reader failed (exit {completed.returncode})"
        raise SheetError(
            f"{path}: {cause}, most likely out of memory: the sheet is larger (or its cells"
            " further apart) than can be read; save it as .xlsx or CSV"
        )
    try:
        status, payload = pickle.loads(completed.stdout)  # our own child's answer
    except Exception:
        raise SheetError(f"{path}: the Excel reader gave no answer; save it as .xlsx") from None
    if status == "error":
        raise SheetError(payload)
    sparse, used, name = payload
    rows, letters = _dense(sparse, used)
    return _Records(rows, name, letters)


def _calamine_child() -> None:
    """The child's side: read the request on stdin, answer on stdout, both pickled."""
    import resource

    path, wanted, max_rows, preview, memory = pickle.loads(sys.stdin.buffer.read())
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:
        answer: tuple[str, Any] = ("ok", _calamine_read(Path(path), wanted, max_rows, preview))
    except SheetError as exc:
        answer = ("error", str(exc))
    sys.stdout.buffer.write(pickle.dumps(answer))


def _calamine_read(
    path: Path, wanted: str | None, max_rows: int, preview: int | None
) -> tuple[list[tuple[int, list[Any]]], set[int], str]:
    from python_calamine import CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises several unrelated types for a bad file
        raise SheetError(f"{path}: not a readable Excel file ({exc})") from None
    with workbook:
        names = workbook.sheet_names
        if not names:
            raise SheetError(f"{path}: the workbook has no sheets")
        name = names[0] if wanted is None else _pick_sheet(path, names, wanted)
        try:
            data = workbook.get_sheet_by_name(name)
            start = data.start or (0, 0)
            stop = preview if preview is not None else max_rows + 2
            sparse: list[tuple[int, list[Any]]] = []
            used: set[int] = set()
            for offset, values in enumerate(data.iter_rows()):
                flat: list[Any] = []
                for index, value in enumerate(values):
                    text = _excel_cell(value)
                    if text:
                        flat.append(start[1] + index)
                        flat.append(text)
                        used.add(start[1] + index)
                if flat:
                    sparse.append((start[0] + offset + 1, flat))
                    if len(sparse) >= stop:
                        break
        except Exception as exc:
            raise SheetError(f"{path}: cannot read sheet {name!r} ({exc})") from None
    return sparse, used, name


# --- CSV -----------------------------------------------------------------------------


def _csv_records(path: Path, limits: SheetLimits) -> Iterator[tuple[int, list[str]]]:
    """Records as a spreadsheet numbers them; any parse error refuses the sheet, naming
    the line, rather than reading a part of it."""
    try:
        with path.open("rb") as handle:  # at most the limit, whatever the file claims
            data = handle.read(limits.max_bytes + 1)
    except OSError as exc:
        raise SheetError(f"{path}: cannot read ({exc.strerror})") from None
    _check_size(path, len(data), limits)
    text = _decode(path, data)
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise SheetError(
            f"{path}: line {line}: a NUL byte (binary data, not a CSV or Excel file);"
            " the sheet is refused",
            line=line,
        )
    delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        # A spreadsheet numbers records, not physical lines (quoted cells may hold newlines).
        for number, row in enumerate(reader, start=1):
            yield number, row
            start = reader.line_num + 1
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise SheetError(
                f"{path}: line {start}: a quoted cell is never closed (its quote runs to the end"
                " of the file); the sheet is refused",
                line=start,
            ) from None
        raise SheetError(
            f"{path}: line {reader.line_num}: {exc}; the sheet is refused", line=reader.line_num
        ) from None


_NOT_ASCII = re.compile(r"[^\x00-\x7f\ufffd]")


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with BOM (Excel's "Unicode text"), else cp1252.

    Bytes that do not decode refuse the sheet with their line: a UTF-8 file with a run
    of other bytes in it would otherwise be read as cp1252 throughout, garbling every name.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return _strict(path, data, "utf-8", 3)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _strict(path, data, "utf-16", 0)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if _NOT_ASCII.search(data.decode("utf-8", errors="replace")):
            _refuse_bytes(path, data, exc.start, "utf-8")
    return _strict(path, data, "cp1252", 0)


def _strict(path: Path, data: bytes, encoding: str, skip: int) -> str:
    try:
        return data[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        _refuse_bytes(path, data, skip + exc.start, encoding)


def _refuse_bytes(path: Path, data: bytes, offset: int, encoding: str) -> NoReturn:
    line = data.count(b"\n", 0, offset) + 1
    raise SheetError(
        f"{path}: line {line}: bytes that are not {encoding}"
        f" ({data[offset : offset + 4].hex(' ')}); the sheet is refused (save it again as UTF-8)",
        line=line,
    )


def _sniff_delimiter(text: str) -> str:
    """The delimiter giving the most consistent field count over the first lines."""
    sample = [line for line in text[:65536].splitlines()[:50] if line.strip()]
    if len(sample) > 1 and len(text) > 65536:
        sample = sample[:-1]  # the cut may have split the last line
    best, best_score = ",", (0.0, 0)
    for delimiter in _DELIMITERS:
        try:
            counts = [len(row) for row in csv.reader(sample, delimiter=delimiter)]
        except csv.Error:
            continue
        if not counts or max(counts) < 2:
            continue
        modal = max(set(counts), key=counts.count)
        if modal < 2:
            continue
        score = (counts.count(modal) / len(counts), modal)
        if score > best_score:
            best, best_score = delimiter, score
    return best


# --- rows to a sheet -----------------------------------------------------------------


def _to_sheet(source: str, records: _Records, limits: SheetLimits, preview: int | None) -> Sheet:
    rows: list[Row] = []
    numbers: list[int] = []
    most = preview if preview is not None else limits.max_rows + 1  # + the header row
    for number, row in records.rows:
        if "".join(row).strip():
            if len(rows) >= most:
                if preview is not None:
                    break
                raise _too_many_rows(source, limits)
            rows.append(tuple(row))
            numbers.append(number)
    if not rows:
        raise SheetError(f"{source}: the sheet is empty")
    rows, numbers = _skip_title_rows(rows, numbers)
    first = [cell.strip() for cell in rows[0]]
    has_header = not any(_looks_like_number(cell) for cell in first)
    header_row = numbers[0] if has_header else 0
    if has_header:
        rows, numbers = rows[1:], numbers[1:]
    width = max(len(first), max((len(row) for row in rows), default=0))
    letters = (records.letters or [])[:width]
    letters += [xl_col_to_name(index) for index in range(len(letters), width)]
    headers = _unique_headers(first if has_header else [], letters)
    sheet = Sheet(source, headers, rows, numbers, has_header, records.sheet_name, header_row)
    sheet.letters = letters
    _drop_empty_columns(sheet)
    return sheet


def _skip_title_rows(rows: list[Row], numbers: list[int]) -> tuple[list[Row], list[int]]:
    """Drop one-cell rows above a wider table ("Leads export, March" over the header)."""

    def filled(row: Row) -> list[str]:
        return [cell for cell in row if cell.strip()]

    if max(len(filled(row)) for row in rows[:10]) < 2:
        return rows, numbers
    skip = 0
    while skip < len(rows) - 1:
        cells = filled(rows[skip])
        if len(cells) != 1 or _looks_like_number(cells[0]):
            break
        skip += 1
    return rows[skip:], numbers[skip:]


def _looks_like_number(cell: str) -> bool:
    digits = sum(char.isdigit() for char in cell)
    return digits >= 7 and digits >= 0.6 * len(cell.replace(" ", ""))


def _unique_headers(first: list[str], letters: list[str]) -> list[str]:
    headers: list[str] = []
    seen: set[str] = set()
    for index, letter in enumerate(letters):
        name = first[index] if index < len(first) and first[index] else letter
        unique, count = name, 1
        while unique.casefold() in seen:
            count += 1
            unique = f"{name} ({count})"
        seen.add(unique.casefold())
        headers.append(unique)
    return headers


#: wider than this, empty columns are found in one pass over the cells instead of one
#: pass over the rows per column
_NARROW = 64


def _drop_empty_columns(sheet: Sheet) -> None:
    """Columns with no header and no value (Excel's trailing `;;;`) are noise."""
    named = {
        index
        for index, header in enumerate(sheet.headers)
        if sheet.has_header and header != sheet.letters[index]
    }
    if len(sheet.headers) <= _NARROW:
        keep = [
            index
            for index in range(len(sheet.headers))
            if index in named or any(index < len(row) and row[index].strip() for row in sheet.rows)
        ]
    else:
        filled = set(named)
        for row in sheet.rows:
            filled.update(index for index, cell in enumerate(row) if cell and cell.strip())
        keep = sorted(filled)
    if len(keep) == len(sheet.headers):
        return
    sheet.headers = [sheet.headers[index] for index in keep]
    sheet.letters = [sheet.letters[index] for index in keep]
    sheet.rows = [
        tuple(row[index] if index < len(row) else "" for index in keep) for row in sheet.rows
    ]
