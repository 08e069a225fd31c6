"""The campaign workbook: ledger -> `metrics_reports/<campaign>-<YYYYMMDD-HHMM>.xlsx`.

Sheets: Summary, Contacts, Attempts, Turns, Rejected, Charts. Test attempts and
test contacts are left out (Summary says how many attempts were), except in a
test campaign (`is_test: true` in its file), whose calls are all tests: there
they are the figures, and Summary says so.

How it stays fast and flat: XlsxWriter builds the small parts (styles, Summary,
Charts, each data sheet's header, widths, frozen row and autofilter) in memory;
the data rows are streamed from the ledger straight into sheet XML in temporary
files and spliced into the package. One pass over each table fills its sheet
and the Summary figures; only latency samples (8 bytes each) are kept, for the
quantiles.

Safety: every string cell, in either writer, goes through `safe_text`. Cells are
always written as text (inline strings), never as formulas; text that a
spreadsheet would read as a formula or number when typed (`=`, `+`, `-`, `@`,
tab, carriage return) also carries Excel's quote-prefix flag, so editing the
cell keeps it text. Phone numbers are text.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import xlsxwriter
from sqlalchemy.orm import Session
from xlsxwriter.utility import xl_col_to_name

from campaign.campaign_file import CampaignFileError, Pricing
from campaign.errors import UserError
from campaign.outcomes import AmdResult, ContactStatus, Outcome
from campaign.store import Ledger
from campaign.store import reporting as q

logger = logging.getLogger(__name__)

SHEETS = ("Summary", "Contacts", "Attempts", "Turns", "Rejected", "Charts")
#: Excel's limit for one cell's text
MAX_CELL_CHARS = 32_767
_RISKY_START = ("=", "+", "-", "@", "\t", "\r")
_EXCEL_EPOCH = datetime(1899, 12, 30)
_DAY = timedelta(days=1)
_DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"


class ReportError(UserError, RuntimeError):
    """The report cannot be written; the message says why in one line."""


# --- pricing -------------------------------------------------------------------------


def pricing_for(config: Mapping[str, Any]) -> Pricing:
    """The campaign's prices as stored in the ledger, or a one-line `ReportError`."""
    try:
        return Pricing.from_config(dict(config))
    except CampaignFileError as exc:
        raise ReportError(str(exc)) from None


# --- cell safety ---------------------------------------------------------------------


class SafeText(NamedTuple):
    text: str
    #: starts like a formula or a signed number: mark it quote-prefixed
    quoted: bool


def safe_text(value: str) -> SafeText:
    """The one gate every string cell passes through (see the module docstring)."""
    text = value[:MAX_CELL_CHARS]
    return SafeText(text, text.startswith(_RISKY_START))


_NEEDS_ESCAPE = re.compile(r"[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    if not _NEEDS_ESCAPE.search(text):
        return text
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A literal CR would be read back as LF; characters XML 1.0 forbids become U+FFFD.
    return _ILLEGAL_XML.sub("\ufffd", text.replace("\r", "&#13;"))


def _excel_serial(moment: datetime) -> float:
    return (moment - _EXCEL_EPOCH) / _DAY


# --- columns and streamed rows -------------------------------------------------------


class Kind(StrEnum):
    """How a column's values are written and formatted."""

    TEXT = "text"
    ID = "id"  #: integer shown without thousands separators
    COUNT = "count"
    SECONDS = "seconds"
    DATETIME = "datetime"  #: naive datetime (the sheet's header says which zone)
    ANY = "any"  #: values from a contact sheet: text, number or JSON


_NUM_FORMATS = {
    Kind.ID: "0",
    Kind.COUNT: "#,##0",
    Kind.SECONDS: "0.000",
    Kind.DATETIME: _DATETIME_FORMAT,
}


@dataclass(frozen=True)
class Column:
    header: str
    kind: Kind = Kind.TEXT
    width: float = 14


@dataclass
class SheetData:
    """One data sheet: its columns and a one-shot iterator of its rows."""

    name: str
    columns: list[Column]
    rows: Iterator[Sequence[Any]]


def _any_value(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value if math.isfinite(value) else str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


class _SheetBody:
    """Streams rows of one data sheet as sheet XML into a temporary file."""

    def __init__(self, path: Path, columns: list[Column], styles: Mapping[str, int]) -> None:
        self.path = path
        self.columns = columns
        self.rows = 0
        self._quoted = styles["quoted"]
        self._encoders = [
            (xl_col_to_name(i), self._encoder(col.kind, styles)) for i, col in enumerate(columns)
        ]
        # errors="replace": a lone surrogate from a bad sheet must not sink the report.
        self._fh: IO[str] = path.open("w", encoding="utf-8", errors="replace", newline="")
        self._parts: list[str] = []

    def _text(self, ref: str, value: str) -> str:
        safe = safe_text(value)
        text = safe.text
        space = ' xml:space="preserve"' if text[:1].isspace() or text[-1:].isspace() else ""
        style = f' s="{self._quoted}"' if safe.quoted else ""
        return f'<c r="{ref}"{style} t="inlineStr"><is><t{space}>{_xml_text(text)}</t></is></c>'

    def _encoder(self, kind: Kind, styles: Mapping[str, int]) -> Callable[[str, Any], str]:
        if kind == Kind.TEXT:
            return self._text
        if kind == Kind.ANY:
            return self._any
        style = styles[kind]
        if kind == Kind.DATETIME:
            return lambda ref, v: f'<c r="{ref}" s="{style}"><v>{_excel_serial(v)!r}</v></c>'
        if kind == Kind.SECONDS:
            return lambda ref, v: (
                f'<c r="{ref}" s="{style}"><v>{v!r}</v></c>' if math.isfinite(v) else ""
            )
        return lambda ref, v: f'<c r="{ref}" s="{style}"><v>{int(v)}</v></c>'

    def _any(self, ref: str, value: Any) -> str:
        value = _any_value(value)
        if isinstance(value, str):
            return self._text(ref, value)
        return f'<c r="{ref}"><v>{value!r}</v></c>'

    def add(self, values: Sequence[Any]) -> None:
        self.rows += 1
        r = str(self.rows + 1)  # row 1 is the header
        cells = [
            encode(letter + r, value)
            for (letter, encode), value in zip(self._encoders, values, strict=True)
            if value is not None and value != ""
        ]
        self._parts.append(f'<row r="{r}">{"".join(cells)}</row>')
        if len(self._parts) >= 1000:
            self._flush()

    def _flush(self) -> None:
        self._fh.write("".join(self._parts))
        self._parts.clear()

    def close(self) -> None:
        self._flush()
        self._fh.close()


# --- figures -------------------------------------------------------------------------


@dataclass
class ReportStats:
    """Figures gathered while the rows stream past; Summary and Charts are made of them."""

    contacts: int = 0
    contact_status: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    dialed: int = 0
    answered: int = 0
    outcomes: Counter[str | None] = field(default_factory=Counter)
    calls: int = 0
    amd: Counter[str | None] = field(default_factory=Counter)
    dispositions: Counter[str | None] = field(default_factory=Counter)
    talk_seconds: float = 0.0
    talked: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tts_characters: int = 0
    stt_seconds: float = 0.0
    turns: int = 0
    first_claimed: datetime | None = None
    last_ended: datetime | None = None
    #: latency samples in seconds, by Summary label
    samples: dict[str, array[float]] = field(default_factory=dict)
    #: attempts per hour since the epoch (UTC), dialed and answered
    dialed_by_hour: Counter[int] = field(default_factory=Counter)
    answered_by_hour: Counter[int] = field(default_factory=Counter)

    def sample(self, label: str, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self.samples.setdefault(label, array("d")).append(value)

    @property
    def empty(self) -> bool:
        return not (self.contacts or self.attempts or sum(self.rejections.values()))


# Latency labels: Summary rows and the keys of ReportStats.samples.
POST_DIAL = "Post-dial delay (dial start → answer)"
FIRST_WORD = "First-word latency (answer → agent's first audio)"
END_OF_TURN = "End-of-turn delay"
TRANSCRIPTION = "Transcription delay"
LLM_TTFT = "LLM time to first token"
TTS_TTFB = "TTS time to first byte"
TOTAL_LATENCY = "Total response latency (callee stops → agent speaks)"
LATENCIES = (POST_DIAL, FIRST_WORD, END_OF_TURN, TRANSCRIPTION, LLM_TTFT, TTS_TTFB, TOTAL_LATENCY)


def quantile(ordered: Sequence[float] | npt.NDArray[np.float64], q_: float) -> float | None:
    """Linear interpolation between closest ranks (Excel PERCENTILE.INC, numpy's default)."""
    if len(ordered) == 0:
        return None
    pos = (len(ordered) - 1) * q_
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def _sorted_samples(stats: ReportStats, label: str) -> npt.NDArray[np.float64]:
    # Sorted as raw doubles: a list of Python floats would take four times the memory.
    samples = stats.samples.get(label)
    if not samples:
        return np.empty(0)
    return np.sort(np.frombuffer(samples, dtype=np.float64))


class _Zones:
    """IANA zone lookups, cached; an unknown name gives no local time rather than an error."""

    def __init__(self) -> None:
        self._cache: dict[str, ZoneInfo | None] = {}

    def first(self, names: Sequence[Any] | None) -> tuple[str, ZoneInfo | None]:
        name = str(names[0]) if names else ""
        if name not in self._cache:
            try:
                self._cache[name] = ZoneInfo(name) if name else None
            except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
                logger.warning("unknown time zone %r in the ledger; local times left blank", name)
                self._cache[name] = None
        return name, self._cache[name]


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


def _local(moment: datetime | None, zone: ZoneInfo | None) -> datetime | None:
    if moment is None or zone is None:
        return None
    return moment.astimezone(zone).replace(tzinfo=None)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _contact_rows(
    rows: Iterator[q.ContactRow], keys: list[str], stats: ReportStats
) -> Iterator[Sequence[Any]]:
    for c in rows:
        stats.contacts += 1
        stats.contact_status[c.status] += 1
        variables = c.variables or {}
        yield (
            c.id,
            c.name,
            c.e164,
            c.raw_phone,
            c.extension,
            ", ".join(map(str, c.timezones or [])),
            c.source_row,
            c.attempts_count,
            c.status,
            c.last_outcome,
            c.disposition,
            *(variables.get(key) for key in keys),
        )


def _attempt_rows(
    rows: Iterator[q.AttemptRow], stats: ReportStats, zones: _Zones
) -> Iterator[Sequence[Any]]:
    for a in rows:
        stats.attempts += 1
        stats.outcomes[a.outcome] += 1
        if stats.first_claimed is None or a.claimed_at < stats.first_claimed:
            stats.first_claimed = a.claimed_at
        if a.ended_at is not None and (stats.last_ended is None or a.ended_at > stats.last_ended):
            stats.last_ended = a.ended_at
        hour = int((a.dial_started_at or a.claimed_at).timestamp() // 3600)
        if a.dial_started_at is not None:
            stats.dialed += 1
            stats.dialed_by_hour[hour] += 1
        # Post-dial delay: from placing the SIP call to the callee (or a machine) answering.
        post_dial = _seconds(a.dial_started_at, a.answered_at)
        talk = _seconds(a.answered_at, a.ended_at)
        if a.answered_at is not None:
            stats.answered += 1
            stats.answered_by_hour[hour] += 1
            stats.sample(POST_DIAL, post_dial)
        if talk is not None and talk >= 0:
            stats.talk_seconds += talk
            stats.talked += 1
        if a.has_call:
            stats.calls += 1
            stats.amd[a.amd_result] += 1
            stats.dispositions[a.disposition] += 1
            stats.sample(FIRST_WORD, a.first_word_latency)
            stats.prompt_tokens += a.llm_prompt_tokens or 0
            stats.completion_tokens += a.llm_completion_tokens or 0
            stats.tts_characters += a.tts_characters or 0
            stats.stt_seconds += a.stt_audio_seconds or 0.0
        zone_name, zone = zones.first(a.timezones)
        yield (
            a.id,
            a.contact_id,
            a.name,
            a.e164,
            a.number,
            zone_name,
            _local(a.claimed_at, zone),
            _local(a.dial_started_at, zone),
            _local(a.answered_at, zone),
            _local(a.ended_at, zone),
            _utc(a.claimed_at),
            _utc(a.dial_started_at),
            _utc(a.answered_at),
            _utc(a.ended_at),
            a.status,
            a.outcome,
            a.sip_status_code,
            a.sip_status,
            post_dial,
            talk,
            a.room_name,
            a.amd_result,
            a.disposition,
            a.end_reason,
            a.first_word_latency,
            a.error,
        )


def _turn_rows(rows: Iterator[q.TurnRow], stats: ReportStats) -> Iterator[Sequence[Any]]:
    for t in rows:
        stats.turns += 1
        stats.sample(END_OF_TURN, t.end_of_turn_delay)
        stats.sample(TRANSCRIPTION, t.transcription_delay)
        stats.sample(LLM_TTFT, t.llm_ttft)
        stats.sample(TTS_TTFB, t.tts_ttfb)
        stats.sample(TOTAL_LATENCY, t.total_latency)
        yield t


def _rejection_rows(
    rows: Iterator[q.RejectionRow], keys: list[str], stats: ReportStats
) -> Iterator[Sequence[Any]]:
    for r in rows:
        stats.rejections[r.reason] += 1
        cells = r.cells or {}
        yield (
            r.source,
            r.source_row,
            r.reason,
            r.raw,
            r.e164,
            r.duplicate_of_row,
            *(cells.get(key) for key in keys),
        )


def iter_sheets(
    session: Session, campaign: q.CampaignInfo, stats: ReportStats
) -> Iterator[SheetData]:
    """The data sheets in workbook order; exhaust each one's rows before taking the next.

    `write_report` streams these into the workbook; `benchmarks/report.py` feeds the
    same rows to its pandas baseline.
    """
    zones = _Zones()
    tests = campaign.is_test
    variable_keys = q.contact_variable_keys(session, campaign.id, tests)
    yield SheetData(
        "Contacts",
        [
            Column("Contact ID", Kind.ID, 11),
            Column("Name", width=24),
            Column("E.164", width=16),
            Column("Phone as given", width=18),
            Column("Extension", width=10),
            Column("Time zone", width=20),
            Column("Sheet row", Kind.ID, 10),
            Column("Attempts", Kind.COUNT, 10),
            Column("Final status", width=13),
            Column("Last outcome", width=16),
            Column("Disposition", width=16),
            *(Column(key, Kind.ANY, 16) for key in variable_keys),
        ],
        _contact_rows(q.iter_contacts(session, campaign.id, tests), variable_keys, stats),
    )
    yield SheetData(
        "Attempts",
        [
            Column("Attempt ID", Kind.ID, 11),
            Column("Contact ID", Kind.ID, 11),
            Column("Name", width=22),
            Column("E.164", width=16),
            Column("Attempt #", Kind.COUNT, 10),
            Column("Time zone", width=20),
            Column("Claimed (local)", Kind.DATETIME, 20),
            Column("Dialed (local)", Kind.DATETIME, 20),
            Column("Answered (local)", Kind.DATETIME, 20),
            Column("Ended (local)", Kind.DATETIME, 20),
            Column("Claimed (UTC)", Kind.DATETIME, 20),
            Column("Dialed (UTC)", Kind.DATETIME, 20),
            Column("Answered (UTC)", Kind.DATETIME, 20),
            Column("Ended (UTC)", Kind.DATETIME, 20),
            Column("Status", width=10),
            Column("Outcome", width=16),
            Column("SIP status code", Kind.ID, 10),
            Column("SIP status", width=18),
            Column("Post-dial delay (s)", Kind.SECONDS, 12),
            Column("Talk time (s)", Kind.SECONDS, 12),
            Column("Room", width=30),
            Column("AMD result", width=12),
            Column("Disposition", width=16),
            Column("End reason", width=15),
            Column("First-word latency (s)", Kind.SECONDS, 12),
            Column("Error", width=30),
        ],
        _attempt_rows(q.iter_attempts(session, campaign.id, tests), stats, zones),
    )
    yield SheetData(
        "Turns",
        [
            Column("Attempt ID", Kind.ID, 11),
            Column("Contact ID", Kind.ID, 11),
            Column("Room", width=30),
            Column("Turn #", Kind.COUNT, 8),
            Column("Callee said", width=40),
            Column("Agent said", width=40),
            Column("End-of-turn delay (s)", Kind.SECONDS, 12),
            Column("Transcription delay (s)", Kind.SECONDS, 12),
            Column("LLM TTFT (s)", Kind.SECONDS, 12),
            Column("TTS TTFB (s)", Kind.SECONDS, 12),
            Column("Total latency (s)", Kind.SECONDS, 12),
        ],
        _turn_rows(q.iter_turns(session, campaign.id, tests), stats),
    )
    cell_keys = q.rejection_cell_keys(session, campaign.id)
    yield SheetData(
        "Rejected",
        [
            Column("Sheet", width=24),
            Column("Sheet row", Kind.ID, 10),
            Column("Reason", width=18),
            Column("Phone as given", width=18),
            Column("E.164", width=16),
            Column("Duplicate of row", Kind.ID, 10),
            *(Column(key, Kind.ANY, 16) for key in cell_keys),
        ],
        _rejection_rows(q.iter_rejections(session, campaign.id), cell_keys, stats),
    )


# --- the workbook --------------------------------------------------------------------


class _Book:
    """The XlsxWriter scaffold plus the streamed bodies of the data sheets."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._buffer = io.BytesIO()
        self.wb = xlsxwriter.Workbook(
            self._buffer,
            {
                "in_memory": True,
                "strings_to_formulas": False,
                "strings_to_numbers": False,
                "strings_to_urls": False,
            },
        )
        wb = self.wb
        self.fmt: dict[str, Any] = {
            "quoted": wb.add_format({"quote_prefix": True}),
            **{kind: wb.add_format({"num_format": nf}) for kind, nf in _NUM_FORMATS.items()},
            "header": wb.add_format(
                {
                    "bold": True,
                    "font_color": "#FFFFFF",
                    "bg_color": "#1F4E78",
                    "text_wrap": True,
                    "valign": "top",
                    "border": 1,
                }
            ),
            "title": wb.add_format({"bold": True, "font_size": 14}),
            "section": wb.add_format({"bold": True, "bg_color": "#DDEBF7", "bottom": 1}),
            "note": wb.add_format({"italic": True, "font_color": "#595959"}),
            "percent": wb.add_format({"num_format": "0.0%"}),
            "duration": wb.add_format({"num_format": "[h]:mm:ss"}),
            "money": wb.add_format({"num_format": "#,##0.0000"}),
            "price": wb.add_format({"num_format": "0.000000"}),
            "float": wb.add_format({"num_format": "#,##0.0"}),
        }
        # The streamed rows name their styles by index before XlsxWriter lays out
        # styles.xml, so the indices are fixed here, first, and reused at close.
        self._styles = {key: self.fmt[key]._get_xf_index() for key in ("quoted", *_NUM_FORMATS)}
        self.sheets = {name: wb.add_worksheet(name) for name in SHEETS}
        self._bodies: dict[str, _SheetBody] = {}

    def put(self, ws: Any, row: int, col: int, value: Any, fmt: str | None = None) -> None:
        """Write one scaffold cell; strings go through `safe_text` like every other cell."""
        style = self.fmt[fmt] if fmt else None
        if value is None:
            return
        if isinstance(value, datetime):
            ws.write_datetime(row, col, _utc(value), self.fmt[Kind.DATETIME])
        elif isinstance(value, timedelta):
            ws.write_number(row, col, value / _DAY, self.fmt["duration"])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                ws.write_number(row, col, value, style)
            else:  # NaN from a bad record: show it rather than fail the report
                ws.write_string(row, col, str(value), style)
        else:
            safe = safe_text(value if isinstance(value, str) else _any_value(value))
            ws.write_string(row, col, safe.text, self.fmt["quoted"] if safe.quoted else style)

    def stream(self, sheet: SheetData) -> None:
        ws = self.sheets[sheet.name]
        body = _SheetBody(self._tmp / f"{sheet.name}.xml", sheet.columns, self._styles)
        try:
            for row in sheet.rows:
                body.add(row)
        finally:
            body.close()
        self._bodies[sheet.name] = body
        ws.set_row(0, 30)
        for col, column in enumerate(sheet.columns):
            kind_fmt = self.fmt.get(column.kind)
            ws.set_column(col, col, column.width, kind_fmt)
            self.put(ws, 0, col, column.header, "header")
        ws.freeze_panes(1, 0)
        ws.autofilter(0, 0, body.rows, len(sheet.columns) - 1)

    def save(self, target: Path) -> None:
        """Close the scaffold and write the package with the streamed rows spliced in."""
        self.sheets["Summary"].activate()
        self.wb.close()
        paths = {f"xl/worksheets/sheet{i + 1}.xml": name for i, name in enumerate(SHEETS)}
        with (
            zipfile.ZipFile(self._buffer) as scaffold,
            zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out,
        ):
            for info in scaffold.infolist():
                body = self._bodies.get(paths.get(info.filename, ""))
                if body is None:
                    out.writestr(info, scaffold.read(info))
                    continue
                head, tail = scaffold.read(info).decode("utf-8").split("</sheetData>")
                last = f"{xl_col_to_name(len(body.columns) - 1)}{body.rows + 1}"
                head = re.sub(r'<dimension ref="[^"]*"/>', f'<dimension ref="A1:{last}"/>', head)
                big = body.path.stat().st_size > 1 << 30
                with (
                    out.open(info.filename, "w", force_zip64=big) as fh,
                    body.path.open("rb") as src,
                ):
                    fh.write(head.encode("utf-8"))
                    shutil.copyfileobj(src, fh, 1 << 20)
                    fh.write(("</sheetData>" + tail).encode("utf-8"))


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class _Summary:
    """Writes the Summary sheet top to bottom: label in A, figures in B..E."""

    def __init__(self, book: _Book) -> None:
        self.book = book
        self.ws = book.sheets["Summary"]
        self.row = 0

    def line(self, *cells: Any, fmts: Sequence[str | None] = ()) -> None:
        for col, value in enumerate(cells):
            self.book.put(self.ws, self.row, col, value, fmts[col] if col < len(fmts) else None)
        self.row += 1

    def section(self, *headers: str) -> None:
        self.row += 1
        for col, text in enumerate(headers):
            self.book.put(self.ws, self.row, col, text, "section")
        self.row += 1

    def counts(self, label: str, count: int, whole: int | None = None) -> None:
        share = None if whole is None else _share(count, whole)
        self.line(label, count, share, fmts=(None, Kind.COUNT, "percent"))


def _ordered(counter: Counter[Any], known: Sequence[str]) -> list[tuple[Any, int]]:
    """Known values first in their declared order (zeros included), then the rest by count."""
    rest = sorted(
        ((k, n) for k, n in counter.items() if k not in known and k is not None),
        key=lambda item: (-item[1], str(item[0])),
    )
    return [(k, counter.get(k, 0)) for k in known] + rest


def _write_summary(
    book: _Book,
    campaign: q.CampaignInfo,
    stats: ReportStats,
    pricing: Pricing,
    now: datetime,
    test_attempts: int,
) -> None:
    s = _Summary(book)
    s.ws.set_column(0, 0, 56)
    s.ws.set_column(1, 1, 20)
    s.ws.set_column(2, 4, 16)
    s.line(f"Campaign {campaign.name}", fmts=("title",))
    if stats.empty:
        s.line("This campaign is empty: no contacts were imported and no calls were made.")
    if campaign.is_test:
        s.line("Test campaign (is_test in its file): its test calls are the figures below.")
    else:
        s.line("Test attempts and test contacts are left out of every figure and sheet.")

    s.section("Campaign", "Value")
    s.line("Name", campaign.name)
    s.line("Status", campaign.status)
    s.line("Region", campaign.region)
    s.line("Created (UTC)", campaign.created_at)
    s.line("Report written (UTC)", now)
    s.line("Period start (UTC): first attempt claimed", stats.first_claimed)
    s.line("Period end (UTC): last call ended", stats.last_ended)
    s.line("Test attempts left out", test_attempts, fmts=(None, Kind.COUNT))

    s.section("Contacts", "Count", "Share")
    s.counts("Contacts imported", stats.contacts)
    rejected = sum(stats.rejections.values())
    s.counts("Rows not imported (all reasons)", rejected)
    for reason, count in _ordered(stats.rejections, ()):
        if reason not in ("duplicate", "do_not_call"):
            s.counts(f"Not imported: {reason}", count, rejected)
    s.counts("Duplicates (not imported)", stats.rejections["duplicate"], rejected)
    s.counts("Do-not-call at import (not imported)", stats.rejections["do_not_call"], rejected)
    s.counts("Do-not-call during the campaign", stats.contact_status[ContactStatus.DNC])
    for status, count in _ordered(stats.contact_status, list(ContactStatus)):
        s.counts(f"Contact status: {status}", count, stats.contacts)

    s.section("Attempts", "Count", "Share")
    s.counts("Attempts made", stats.attempts)
    s.counts("Dialed (SIP call placed)", stats.dialed, stats.attempts)
    s.counts("Answered (by a human or a machine)", stats.answered, stats.attempts)
    s.line(
        "Answer rate (answered ÷ dialed)",
        _share(stats.answered, stats.dialed),
        fmts=(None, "percent"),
    )
    for outcome, count in _ordered(stats.outcomes, list(Outcome)):
        s.counts(f"Outcome: {outcome}", count, stats.attempts)
    s.counts("Outcome: (in progress)", stats.outcomes[None], stats.attempts)

    s.section("Connected calls", "Count", "Share")
    s.counts("Calls recorded by the agent", stats.calls)
    for amd, count in _ordered(stats.amd, list(AmdResult)):
        s.counts(f"AMD: {amd}", count, stats.calls)
    s.counts("AMD: (not recorded)", stats.amd[None], stats.calls)
    for disposition, count in _ordered(stats.dispositions, ()):
        s.counts(f"Disposition: {disposition}", count, stats.calls)
    s.counts("Disposition: (none)", stats.dispositions[None], stats.calls)
    s.line("Talk time, total (answer → hang-up)", timedelta(seconds=stats.talk_seconds))
    s.line(
        "Talk time, mean (s)",
        stats.talk_seconds / stats.talked if stats.talked else None,
        fmts=(None, Kind.SECONDS),
    )

    s.section("Latency (seconds)", "Median", "p95", "Samples")
    for label in LATENCIES:
        ordered = _sorted_samples(stats, label)
        s.line(
            label,
            quantile(ordered, 0.5),
            quantile(ordered, 0.95),
            len(ordered),
            fmts=(None, Kind.SECONDS, Kind.SECONDS, Kind.COUNT),
        )

    s.section("Usage and estimated cost", "Quantity", "Unit price", "Price per", "Estimated cost")
    # (label, quantity shown, unit price, price unit, quantity in price units)
    items = [
        (
            "LLM prompt tokens",
            stats.prompt_tokens,
            pricing.llm_prompt_per_1k_tokens,
            "1,000 tokens",
            stats.prompt_tokens / 1000,
        ),
        (
            "LLM completion tokens",
            stats.completion_tokens,
            pricing.llm_completion_per_1k_tokens,
            "1,000 tokens",
            stats.completion_tokens / 1000,
        ),
        (
            "TTS characters",
            stats.tts_characters,
            pricing.tts_per_1k_characters,
            "1,000 characters",
            stats.tts_characters / 1000,
        ),
        (
            "STT audio seconds",
            stats.stt_seconds,
            pricing.stt_per_minute,
            "minute",
            stats.stt_seconds / 60,
        ),
        (
            "Telephony seconds (connected)",
            stats.talk_seconds,
            pricing.telephony_per_minute,
            "minute",
            stats.talk_seconds / 60,
        ),
    ]
    total = 0.0
    for label, quantity, price, per, units in items:
        cost = units * price
        total += cost
        s.line(label, quantity, price, per, cost, fmts=(None, "float", "price", None, "money"))
    s.line("Estimated cost, total", None, None, None, total, fmts=(None, None, None, None, "money"))
    s.line(
        "Cost is an estimate: usage times the per-unit prices under `pricing` in the campaign "
        "file (" + ", ".join(Pricing.model_fields) + "); a missing price counts as 0.",
        fmts=("note",),
    )

    # the figures above are what a manager opens the workbook for; the settings last
    s.section("Campaign settings (as of the last run)", "Value")
    for key, value in _flatten("", campaign.config):
        s.line(f"Setting: {key}", value)


def _nice_width(span: float, bins: int) -> float:
    raw = span / bins
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for step in (1, 2, 2.5, 5, 10):
        if raw <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _write_charts(book: _Book, stats: ReportStats) -> None:
    ws = book.sheets["Charts"]
    wb = book.wb
    if not stats.attempts:
        book.put(ws, 0, 0, "No attempts yet, so there is nothing to chart.", "note")
        return
    ws.set_column(0, 0, 18)
    ws.set_column(3, 3, 16)
    ws.set_column(6, 6, 18)

    outcomes = [(str(k), n) for k, n in _ordered(stats.outcomes, list(Outcome)) if n]
    if stats.outcomes[None]:
        outcomes.append(("(in progress)", stats.outcomes[None]))
    book.put(ws, 0, 0, "Outcome", "header")
    book.put(ws, 0, 1, "Attempts", "header")
    for i, (label, count) in enumerate(outcomes, start=1):
        book.put(ws, i, 0, label)
        book.put(ws, i, 1, count, Kind.COUNT)
    chart = wb.add_chart({"type": "bar"})
    chart.add_series(
        {
            "name": "Attempts",
            "categories": ["Charts", 1, 0, len(outcomes), 0],
            "values": ["Charts", 1, 1, len(outcomes), 1],
            "data_labels": {"value": True},
        }
    )
    chart.set_title({"name": "Outcomes"})
    chart.set_legend({"none": True})
    ws.insert_chart(0, 9, chart, {"x_scale": 1.3, "y_scale": 1.1})

    latencies = _sorted_samples(stats, TOTAL_LATENCY)
    book.put(ws, 0, 3, "Response latency (s)", "header")
    book.put(ws, 0, 4, "Turns", "header")
    if len(latencies):
        top = quantile(latencies, 0.99) or float(latencies[-1])
        width = _nice_width(max(top, 0.1), 20)
        edges = math.ceil(top / width) + 1
        bins = np.clip(latencies // width, 0, edges - 1).astype(np.int64)
        counts = np.bincount(bins, minlength=edges)
        for i in range(edges):
            low = i * width
            label = f"≥ {low:g}" if i == edges - 1 else f"{low:g}–{low + width:g}"
            book.put(ws, i + 1, 3, label)
            book.put(ws, i + 1, 4, int(counts[i]), Kind.COUNT)
        chart = wb.add_chart({"type": "column"})
        chart.add_series(
            {
                "name": "Turns",
                "categories": ["Charts", 1, 3, edges, 3],
                "values": ["Charts", 1, 4, edges, 4],
                "gap": 10,
            }
        )
        chart.set_title({"name": "Total response latency per turn"})
        chart.set_x_axis({"name": "seconds"})
        chart.set_legend({"none": True})
        ws.insert_chart(18, 9, chart, {"x_scale": 1.3, "y_scale": 1.1})
    else:
        book.put(ws, 1, 3, "No turns recorded.", "note")

    hours = set(stats.dialed_by_hour) | set(stats.answered_by_hour)
    step = 1
    if hours and max(hours) - min(hours) > 72:
        step = 24  # more than three days: count per day
    book.put(ws, 0, 6, "Hour (UTC)" if step == 1 else "Day (UTC)", "header")
    book.put(ws, 0, 7, "Dialed", "header")
    book.put(ws, 0, 8, "Answered", "header")
    if hours:
        first, last = min(hours) // step, max(hours) // step
        dialed: Counter[int] = Counter()
        answered: Counter[int] = Counter()
        for hour, n in stats.dialed_by_hour.items():
            dialed[hour // step] += n
        for hour, n in stats.answered_by_hour.items():
            answered[hour // step] += n
        for i, bucket in enumerate(range(first, last + 1), start=1):
            start = datetime.fromtimestamp(bucket * step * 3600, UTC)
            book.put(ws, i, 6, f"{start:%Y-%m-%d %H:%M}" if step == 1 else f"{start:%Y-%m-%d}")
            book.put(ws, i, 7, dialed.get(bucket, 0), Kind.COUNT)
            book.put(ws, i, 8, answered.get(bucket, 0), Kind.COUNT)
        rows = last - first + 1
        chart = wb.add_chart({"type": "line"})
        for col, name in ((7, "Dialed"), (8, "Answered")):
            chart.add_series(
                {
                    "name": name,
                    "categories": ["Charts", 1, 6, rows, 6],
                    "values": ["Charts", 1, col, rows, col],
                    "marker": {"type": "circle", "size": 4},
                }
            )
        chart.set_title({"name": "Calls over time (UTC)"})
        ws.insert_chart(36, 9, chart, {"x_scale": 1.3, "y_scale": 1.1})


def default_report_path(campaign_name: str, now: datetime, reports_dir: Path) -> Path:
    """`<reports_dir>/<campaign>-<YYYYMMDD-HHMM>.xlsx`, in `now`'s own wall-clock time."""
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", campaign_name)
    return reports_dir / f"{safe_name}-{now:%Y%m%d-%H%M}.xlsx"


def write_report(
    ledger: Ledger, campaign_name: str, out: Path | None = None, *, now: datetime | None = None
) -> Path:
    """Write the campaign's workbook and return its path.

    `out` defaults to `default_report_path` under `Settings.reports_dir`; `now`
    (default: this machine's local time) names the file and stamps the Summary.
    The file appears whole or not at all.
    """
    # A naive `now` (or none) is this machine's local time; an aware one is kept as given.
    moment = now if now is not None and now.tzinfo is not None else (now or datetime.now())
    moment = moment.astimezone(moment.tzinfo)
    with ledger.session() as session:
        campaign = q.find_campaign(session, campaign_name)
        if campaign is None:
            raise ReportError(f"no campaign named {campaign_name!r} in the ledger")
        pricing = pricing_for(campaign.config)
        if out is None:
            from campaign.config import get_settings

            out = default_report_path(campaign.name, moment, get_settings().reports_dir)
        stats = ReportStats()
        with tempfile.TemporaryDirectory(prefix="dialer-report-") as tmp:
            book = _Book(Path(tmp))
            for sheet in iter_sheets(session, campaign, stats):
                book.stream(sheet)
            test_attempts = 0 if campaign.is_test else q.count_test_attempts(session, campaign.id)
            _write_summary(book, campaign, stats, pricing, moment, test_attempts)
            _write_charts(book, stats)
            # A part file of this process's own: two dialers of one campaign may finish in
            # the same minute and write the same path; each replace is whole, last wins.
            part = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                book.save(part)
                os.replace(part, out)
            except OSError as exc:
                part.unlink(missing_ok=True)
                raise ReportError(f"cannot write the report to {out}: {exc.strerror}") from None
    logger.info(
        "report for campaign %s written to %s (%d contacts, %d attempts, %d turns)",
        campaign.name,
        out,
        stats.contacts,
        stats.attempts,
        stats.turns,
    )
    return out
