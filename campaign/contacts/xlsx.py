"""XLSX: the sheet's XML, streamed. Reading costs what the cells holding data cost, never
the sheet's stated size (one stray cell at `XFD1048576` adds one cell, not a grid)."""

from __future__ import annotations

import html
import posixpath
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from campaign.contacts.errors import SheetError
from campaign.contacts.sheet import SheetLimits, _dense, _pick_sheet, _Records

_XLSX_CHUNK = 4 * 2**20
_REL_OFFICE_DOCUMENT = "/officeDocument"
_BUILTIN_DATE_FORMATS = frozenset({*range(14, 23), *range(27, 37), *range(45, 48), *range(50, 59)})
_DATE_CODE = re.compile(r"[dmyhs]", re.I)
_FORMAT_NOISE = re.compile(r'"[^"]*"|\[[^\]]*\]|\\.|_.|\*.')
_OOXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_ROOT_PREFIX = re.compile(rb"<([A-Za-z_][\w.-]*:)?(?:worksheet|sst|dialogsheet|chartsheet)[\s>/]")
_REF = re.compile(rb'\sr\s*=\s*["\']\$?([A-Za-z]{1,3})\$?(\d*)["\']')
_ROW_NUMBER = re.compile(rb'\sr\s*=\s*["\'](\d+)["\']')
_TYPE = re.compile(rb'\st\s*=\s*["\'](\w+)["\']')
_STYLE = re.compile(rb'\ss\s*=\s*["\'](\d+)["\']')


class _Grammar:
    """The few SpreadsheetML patterns a sheet's cells need, for one namespace prefix."""

    def __init__(self, prefix: bytes) -> None:
        p = re.escape(prefix)
        # a row's start tag (its attributes), or a cell: the column of a leading `r`
        # attribute (as writers put it), the other attributes, then its content: a
        # plain `<v>` value, a plain inline string, or anything else (read apart)
        v, t, c = p + rb"v>", p + rb"t>", p + rb"c"
        self.token = re.compile(
            rb"<" + p + rb"(row)(?=[\s/>])([^>]*)>|<" + c + rb"(?=[\s/>])"
            rb"(?:\s+r\s*=\s*[\"']\$?([A-Za-z]{1,3})\$?\d*[\"'])?([^>]*?)"
            rb"(?:/>|><" + v + rb"([^<]*)</" + v + rb"</" + c + rb">"
            rb"|><" + p + rb"is><" + t + rb"([^<]*)</" + t + rb"</" + p + rb"is></" + c + rb">"
            rb"|>(.*?)</" + c + rb"\s*>)",
            re.S,
        )
        self.row_end = b"</" + prefix + b"row>"
        self.value = re.compile(rb"<" + p + rb"v(?:\s[^>]*)?>([^<]*)</" + p + rb"v\s*>")
        self.text = re.compile(rb"<" + p + rb"t(?:\s[^>]*)?>([^<]*)</" + p + rb"t\s*>")
        self.phonetic = re.compile(rb"<" + p + rb"rPh\b.*?</" + p + rb"rPh\s*>", re.S)
        self.item = re.compile(rb"<" + p + rb"si(?:\s[^>]*)?(?:/>|>(.*?)</" + p + rb"si\s*>)", re.S)
        self.item_end = b"</" + prefix + b"si>"

    def texts(self, inner: bytes) -> str:
        """The text of an `<is>` or `<si>`: its runs joined, phonetic guides left out."""
        if b"rPh" in inner:
            inner = self.phonetic.sub(b"", inner)
        return _xml_text(b"".join(self.text.findall(inner)))


def _xml_text(raw: bytes) -> str:
    text = raw.decode("utf-8")
    if b"&" in raw:
        text = html.unescape(text)
    if b"_x" in raw:  # OOXML's own escape for characters XML cannot hold (`_x000D_`)
        text = _OOXML_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), text)
    return text


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _is_xlsx(path: Path) -> bool:
    """A zip holding SpreadsheetML (XLSX, XLSM); ODS and XLSB go to calamine."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "xl/workbook.xml" in names:
                return True
            if "xl/workbook.bin" in names or "content.xml" in names:
                return False
            main = _main_part(archive)
    except Exception:  # not even a zip to look into: calamine says what it is
        return False
    return main is not None and main.endswith(".xml")


def _small_xml(archive: zipfile.ZipFile, name: str) -> ET.Element:
    """A package part that is small by nature (workbook, relationships, styles)."""
    with archive.open(name) as handle:
        data = handle.read(16 * 2**20 + 1)
    if len(data) > 16 * 2**20:
        raise SheetError(f"{name}: more than 16 MiB of XML in a part that holds a few KiB")
    return ET.fromstring(data)


def _relationships(archive: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """A part's relationships: id -> (type, target part name)."""
    folder, _, base = part.rpartition("/")
    rels_name = f"{folder}/_rels/{base}.rels" if folder else f"_rels/{base}.rels"
    if rels_name not in archive.NameToInfo:
        return {}
    found: dict[str, tuple[str, str]] = {}
    for rel in _small_xml(archive, rels_name):
        target = rel.get("Target", "")
        if rel.get("TargetMode") == "External":
            continue
        if target.startswith("/"):
            name = target[1:]
        else:
            name = posixpath.normpath(posixpath.join(folder, target)) if folder else target
        found[rel.get("Id", "")] = (rel.get("Type", ""), name)
    return found


def _main_part(archive: zipfile.ZipFile) -> str | None:
    for kind, name in _relationships(archive, "").values():
        if kind.endswith(_REL_OFFICE_DOCUMENT):
            return name
    return None


def _xlsx_records(
    path: Path, wanted: str | None, limits: SheetLimits, preview: int | None
) -> _Records:
    try:
        with zipfile.ZipFile(path) as archive:
            return _xlsx_read(archive, path, wanted, limits, preview)
    except SheetError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ET.ParseError) as exc:
        raise SheetError(f"{path}: not a readable Excel file ({exc})") from None
    except Exception as exc:  # the file is untrusted: whatever breaks, it is not readable
        raise SheetError(
            f"{path}: not a readable Excel file ({type(exc).__name__}: {exc})"
        ) from None


def _xlsx_read(
    archive: zipfile.ZipFile,
    path: Path,
    wanted: str | None,
    limits: SheetLimits,
    preview: int | None,
) -> _Records:
    workbook_part = _main_part(archive)
    if workbook_part is None:
        raise SheetError(f"{path}: not a readable Excel file (no workbook part)")
    workbook = _small_xml(archive, workbook_part)
    rels = _relationships(archive, workbook_part)
    sheets: list[tuple[str, str]] = []
    date1904 = False
    for element in workbook.iter():
        tag = _local(element.tag)
        if tag == "workbookPr":
            date1904 = element.get("date1904", "0").lower() in ("1", "true")
        elif tag == "sheet":
            rid = next((v for k, v in element.attrib.items() if _local(k) == "id"), "")
            kind, target = rels.get(rid, ("", ""))
            if kind.endswith("/worksheet"):
                sheets.append((element.get("name", ""), target))
    if not sheets:
        raise SheetError(f"{path}: the workbook has no sheets")
    names = [name for name, _ in sheets]
    name = names[0] if wanted is None else _pick_sheet(path, names, wanted)
    part = dict(sheets)[name]
    budget = [limits.max_bytes]
    shared: list[str] = []
    date_styles: frozenset[int] = frozenset()
    for kind, target in rels.values():
        if kind.endswith("/sharedStrings"):
            shared = _shared_strings(archive, target, path, budget, limits)
        elif kind.endswith("/styles"):
            date_styles = _date_styles(_small_xml(archive, target))
    epoch = datetime(1904, 1, 1) if date1904 else datetime(1899, 12, 30)
    return _sheet_cells(
        archive, part, path, name, shared, date_styles, epoch, budget, limits, preview
    )


def _chunks(
    archive: zipfile.ZipFile, part: str, path: Path, budget: list[int], limits: SheetLimits
) -> Iterator[bytes]:
    """A part's bytes in pieces, counted against the size budget (shared by the parts)."""
    with archive.open(part) as handle:
        first = True
        while chunk := handle.read(_XLSX_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise SheetError(
                    f"{path}: unpacks to more than the {limits.max_bytes / 2**20:,.0f} MiB a sheet"
                    " may have (DIALER_SHEET_MAX_MB); split it"
                )
            if first and chunk[:2] in (b"\xff\xfe", b"\xfe\xff"):
                raise SheetError(f"{path}: {part} is UTF-16 XML; save the workbook again")
            first = False
            yield chunk


def _grammar_for(head: bytes) -> _Grammar:
    match = _ROOT_PREFIX.search(head)
    return _Grammar(match.group(1) or b"" if match else b"")


def _shared_strings(
    archive: zipfile.ZipFile, part: str, path: Path, budget: list[int], limits: SheetLimits
) -> list[str]:
    strings: list[str] = []
    grammar: _Grammar | None = None
    pending = b""
    for chunk in _chunks(archive, part, path, budget, limits):
        data = pending + chunk
        if grammar is None:
            grammar = _grammar_for(data[:4096])
        cut = data.rfind(grammar.item_end)
        cut = -1 if cut < 0 else cut + len(grammar.item_end)
        if cut < 0:
            pending = data
            continue
        strings.extend(
            grammar.texts(inner) if inner else "" for inner in grammar.item.findall(data[:cut])
        )
        pending = data[cut:]
    if grammar is not None and pending:
        strings.extend(
            grammar.texts(inner) if inner else "" for inner in grammar.item.findall(pending)
        )
    return strings


def _date_styles(styles: ET.Element) -> frozenset[int]:
    """Indexes of the cell formats that show a number as a date or time."""
    custom: dict[int, str] = {}
    formats: list[int] = []
    for element in styles:
        tag = _local(element.tag)
        if tag == "numFmts":
            for fmt in element:
                custom[int(fmt.get("numFmtId", "0"))] = fmt.get("formatCode", "")
        elif tag == "cellXfs":
            formats = [int(xf.get("numFmtId", "0")) for xf in element]
    dates = set()
    for index, fmt_id in enumerate(formats):
        code = custom.get(fmt_id)
        if code is None:
            if fmt_id in _BUILTIN_DATE_FORMATS:
                dates.add(index)
        elif _DATE_CODE.search(_FORMAT_NOISE.sub("", code.split(";")[0])) and "General" not in code:
            dates.add(index)
    return frozenset(dates)


def _column_index(letters: bytes, cache: dict[bytes, int]) -> int:
    index = cache.get(letters)
    if index is None:
        index = 0
        for char in letters.upper():
            index = index * 26 + char - 64
        index = cache[letters] = index - 1
    return index


def _sheet_cells(
    archive: zipfile.ZipFile,
    part: str,
    path: Path,
    name: str,
    shared: list[str],
    date_styles: frozenset[int],
    epoch: datetime,
    budget: list[int],
    limits: SheetLimits,
    preview: int | None,
) -> _Records:
    """Every cell that holds a value, row by row, from the sheet's XML."""
    sparse: list[tuple[int, list[Any]]] = []
    used: set[int] = set()
    columns: dict[bytes, int] = {}
    kinds: dict[bytes, tuple[bytes, bool]] = {}
    grammar: _Grammar | None = None
    pending = b""
    row_number, column = 0, -1
    flat: list[Any] | None = None
    # enough for `_to_sheet` to see one row too many (the header is one more)
    stop = preview if preview is not None else limits.max_rows + 2

    def cells(data: bytes) -> bool:
        """Scan complete rows; False once enough rows are read."""
        nonlocal row_number, column, flat
        assert grammar is not None
        value_of = grammar.value.search
        for is_row, row_attrs, letters, attrs, raw, inline, inner in grammar.token.findall(data):
            if is_row:
                if flat:
                    sparse.append((row_number, flat))
                    used.update(flat[0::2])
                    if len(sparse) >= stop:
                        return False
                found = _ROW_NUMBER.search(row_attrs)
                row_number = int(found.group(1)) if found else row_number + 1
                column, flat = -1, []
                continue
            if letters:
                found_column = columns.get(letters)
                column = _column_index(letters, columns) if found_column is None else found_column
                # the attributes left (type, style) repeat: each spelling is read once
                kind_and_date = kinds.get(attrs)
                if kind_and_date is None:
                    kind_and_date = kinds[attrs] = _cell_kind(attrs, date_styles)
            else:
                ref = _REF.search(attrs)
                column = _column_index(ref.group(1), columns) if ref else column + 1
                kind_and_date = _cell_kind(attrs, date_styles)
            kind, is_date = kind_and_date
            if inline:
                text = _xml_text(inline)
            elif inner:
                if kind == b"inlineStr":
                    text = grammar.texts(inner)
                    raw = b""
                else:
                    found_value = value_of(inner)
                    raw = found_value.group(1) if found_value else b""
                    text = ""
            else:
                text = ""
            if raw:
                if kind == b"s":
                    text = shared[int(raw)]
                elif kind == b"n":
                    digits = raw.isdigit() and not is_date
                    text = raw.decode() if digits else _number(raw, is_date, epoch)
                elif kind == b"b":
                    text = "TRUE" if raw.strip() in (b"1", b"true") else "FALSE"
                else:  # str (a formula's text), e (an error such as #N/A), d (an ISO date)
                    text = _xml_text(raw)
            if text:
                if flat is None:  # a cell outside any row: malformed
                    raise SheetError(f"{path}: not a readable Excel file (a cell outside a row)")
                flat.append(column)
                flat.append(text)
        return True

    for chunk in _chunks(archive, part, path, budget, limits):
        data = pending + chunk
        if grammar is None:
            grammar = _grammar_for(data[:4096])
        cut = data.rfind(grammar.row_end)
        if cut < 0:
            pending = data
            continue
        cut += len(grammar.row_end)
        pending = data[cut:]
        if not cells(data[:cut]):
            pending, flat = b"", None
            break
    if grammar is not None and pending and not cells(pending):
        flat = None
    if flat and len(sparse) < stop:
        sparse.append((row_number, flat))
        used.update(flat[0::2])
    rows, letters = _dense(sparse, used)
    return _Records(rows, name, letters)


def _cell_kind(attrs: bytes, date_styles: frozenset[int]) -> tuple[bytes, bool]:
    """A cell's type (`s`, `n`, `inlineStr`, ...) and whether its style shows a date."""
    kind = _TYPE.search(attrs)
    style = _STYLE.search(attrs) if date_styles else None
    return (kind.group(1) if kind else b"n"), style is not None and int(
        style.group(1)
    ) in date_styles


def _number(raw: bytes, is_date: bool, epoch: datetime) -> str:
    text = raw.decode("ascii", "replace").strip()
    if text.isdigit() and not is_date:
        return text  # digits as written: a long number keeps every one
    try:
        value = float(text)
    except ValueError:
        return text
    if is_date and 0 <= value < 2_958_466:  # up to 9999-12-31
        moment = epoch + timedelta(days=value)
        moment = moment.replace(microsecond=0) + timedelta(seconds=round(moment.microsecond / 1e6))
        if value < 1:
            return moment.time().isoformat()
        if value.is_integer():
            return moment.date().isoformat()
        return moment.isoformat()
    return f"{value:.0f}" if value.is_integer() else repr(value)
