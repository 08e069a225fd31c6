"""Contact sheets: CSV / XLSX / XLS -> dialable contacts, duplicates and rejections.

`read_sheet` turns a file into strings (delimiter and encoding sniffed, Excel
read with calamine); `validate_sheet` finds the phone, name and time-zone
columns and applies the number policy; `normalise_number` does one number.

Policy: a number is parsed with the campaign's default region unless it carries
its own `+` or `00` prefix; it is accepted only when phonenumbers calls it valid
and of a dialable type; it is stored as E.164; the first row with an E.164 wins
and later ones are duplicates. Row numbers are as a spreadsheet shows them
(header is row 1).

Speed (see docs/performance.md, "Ingest"): each distinct cell is normalised once
per sheet. Plain inputs (digits with common punctuation, the vast majority) take
`_FastPath`, which follows phonenumbers' own `parse` / `number_type` / time-zone
steps with each region's type patterns compiled into one regex per number length;
everything else goes through phonenumbers itself.
`tests/unit/test_contacts_numbers.py` holds the two paths to the same answers.
Rows are tuples, accepted contacts are built when read (`AcceptedContacts`), and
the garbage collector waits while a sheet's results are built.
"""

from __future__ import annotations

import csv
import gc
import html
import io
import logging
import pickle
import posixpath
import re
import signal
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, overload
from zoneinfo import available_timezones

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType, re_util
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, NumberParseException
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from campaign.errors import UserError

log = logging.getLogger(__name__)

# Keep every compiled metadata pattern (phonenumbers' own option; re's cache is too small).
re_util.enable_pattern_cache()

__all__ = [
    "AcceptedContacts",
    "Columns",
    "Duplicate",
    "NormalisedNumber",
    "ParsedContact",
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


class SheetError(UserError, ValueError):
    """The sheet (or an option about it) cannot be used; the message is for the user.

    `line` is the line of a text file the problem is on, when there is one."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class Reason(StrEnum):
    """Why a row did not become a contact."""

    EMPTY = "empty"  #: the phone cell is blank
    UNPARSEABLE = "unparseable"  #: no phone number could be read from the cell
    INVALID = "invalid"  #: a number, but not a valid one (wrong length, unknown range)
    NOT_DIALABLE_TYPE = "not_dialable_type"  #: premium-rate, shared-cost, UAN, pager, voicemail
    DO_NOT_CALL = "do_not_call"  #: on the do-not-call list
    BAD_EXTENSION = "bad_extension"  #: an extension longer than `MAX_EXTENSION` digits


#: the longest number kept (the ledger's column): E.164 allows 15 digits, phonenumbers
#: parses up to 20; an invalid parse longer than this is kept as no number at all
MAX_E164 = 20
#: the longest extension dialed (and stored); a longer one refuses the row
MAX_EXTENSION = 20


#: Number types we never dial (cost the callee or reach no person).
NOT_DIALABLE_TYPES = frozenset(
    {
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.UAN,
        PhoneNumberType.PAGER,
        PhoneNumberType.VOICEMAIL,
    }
)

_TYPE_NAMES = {
    value: name.lower() for name, value in vars(PhoneNumberType).items() if name.isupper()
}


def check_region(region: str) -> str:
    """The upper-cased ISO region code, or SheetError naming the bad one."""
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise SheetError(f"unknown region {region!r}: use an ISO 3166 code such as US, GB or DE")
    return code


# --------------------------------------------------------------------------- numbers


class NormalisedNumber(NamedTuple):
    """One cell's number after the policy. `reason` is None when it may be dialed."""

    raw: str
    reason: Reason | None
    e164: str | None = None  #: set whenever the cell parsed, even when not dialable
    extension: str | None = None
    number_type: str | None = None  #: phonenumbers' type in lower case ("mobile", ...)
    timezones: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason is None


_UNKNOWN_TZ = "Etc/Unknown"
_PUNCTUATION_CHARS = " \t\u00a0\u2007\u202f\u2009-\u2010\u2011\u2012\u2013\u2014\u2212.()/[]"
_PUNCTUATION = str.maketrans("", "", _PUNCTUATION_CHARS)
_ASCII_PUNCTUATION = _PUNCTUATION_CHARS.encode("ascii", "ignore")
_SCIENTIFIC = re.compile(r"[+-]?(\d)(?:[.,](\d+))?[eE]\+?(\d{1,2})")
_EXCEL_FLOAT = re.compile(r"(\+?\d+)\.0+")
_EXCEL_TEXT_FORMULA = re.compile(r'="(.*)"')
_LEADING_00 = re.compile(r"[\s(]*00")
# Cell separators between two numbers. A slash is a separator only between two
# long digit runs ("030/1234567" is one German number).
_SPLIT = re.compile(r"\s*(?:[,;|\n\r]|\s+(?:or|oder|ou|o|y|and|&|und|et)\s+)\s*", re.I)
_EXTENSION_ONLY = re.compile(
    r"(?:ext|extn|extension|x|#|poste|anexo|durchwahl|dw|int)\.?\s*[:.=]?\s*(\d{1,7})|(\d{1,6})",
    re.I,
)
_DIGIT = re.compile(r"\d")


def _compact(text: str) -> str:
    """The cell without spaces, dashes, dots, brackets and slashes."""
    if text.isascii():  # bytes.translate is three times faster than str.translate
        return text.encode("ascii").translate(None, _ASCII_PUNCTUATION).decode("ascii")
    return text.translate(_PUNCTUATION)


#: The number types `_number_type_helper` tries after the general description, in its
#: order, by their PhoneMetadata attribute (fixed line and mobile come last, apart).
_TYPE_ORDER = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)
#: classifier group name -> number type
_GROUP_TYPES: dict[str, int] = {
    name: getattr(PhoneNumberType, name.upper())
    for name in (*_TYPE_ORDER, "fixed_line_or_mobile", "fixed_line", "mobile")
}


def _admitting(desc: Any, length: int) -> str | None:
    """A description's pattern if it may match a number of this length
    (`_is_number_matching_desc`: no lengths listed means any length)."""
    if desc is None or not desc.national_number_pattern:
        return None
    if desc.possible_length and length not in desc.possible_length:
        return None
    pattern: str = desc.national_number_pattern
    return pattern


def _classifier(metadata: Any, length: int) -> re.Pattern[str] | None:
    """`_number_type_helper` for numbers of one length as one regex: the general
    description as a look-ahead, then one named alternative per type in the library's
    order (the first alternative that matches the whole number wins, as there)."""
    general = _admitting(metadata.general_desc, length)
    if general is None:
        return None
    alternatives = [
        f"(?P<{name}>{pattern})"
        for name in _TYPE_ORDER
        if (pattern := _admitting(getattr(metadata, name), length)) is not None
    ]
    fixed = _admitting(metadata.fixed_line, length)
    mobile = _admitting(metadata.mobile, length)
    if metadata.same_mobile_and_fixed_line_pattern:
        mobile = None  # the library never tries mobile on its own then
        if fixed is not None:
            alternatives.append(f"(?P<fixed_line_or_mobile>{fixed})")
    elif fixed is not None:
        if mobile is not None:
            alternatives.append(f"(?P<fixed_line_or_mobile>(?=(?:{mobile})\\Z)(?:{fixed}))")
        alternatives.append(f"(?P<fixed_line>{fixed})")
    if mobile is not None:
        alternatives.append(f"(?P<mobile>{mobile})")
    if not alternatives:
        return None
    return re.compile(f"(?=(?:{general})\\Z)(?:{'|'.join(alternatives)})")


class _Rules:
    """One region's metadata, compiled: what `_FastPath` needs from PhoneMetadata."""

    def __init__(self, metadata: Any) -> None:
        self.country_code: int = metadata.country_code
        self.country_code_str = str(metadata.country_code)
        general = metadata.general_desc.national_number_pattern
        self.general = re.compile(general) if general else None
        self.lengths: tuple[int, ...] = tuple(metadata.general_desc.possible_length)
        self.local_lengths = frozenset(metadata.general_desc.possible_length_local_only)
        self.idd = re.compile(metadata.international_prefix or "NonMatch")
        npp = metadata.national_prefix_for_parsing
        self.national_prefix = re.compile(npp) if npp else None
        self.transform: str | None = metadata.national_prefix_transform_rule or None
        leading = metadata.leading_digits
        self.leading_digits = re.compile(leading) if leading else None
        self._metadata = metadata
        #: by number length, compiled on first use (a sheet holds few lengths)
        self._classifiers: dict[int, re.Pattern[str] | None] = {}

    def general_matches(self, nsn: str) -> bool:
        return self.general is not None and self.general.fullmatch(nsn) is not None

    def number_type(self, nsn: str) -> int:
        """phonenumbers' `_number_type_helper`: one regex call."""
        length = len(nsn)
        try:
            classifier = self._classifiers[length]
        except KeyError:
            classifier = self._classifiers[length] = _classifier(self._metadata, length)
        match = None if classifier is None else classifier.fullmatch(nsn)
        if match is None or match.lastgroup is None:
            return PhoneNumberType.UNKNOWN
        return _GROUP_TYPES[match.lastgroup]

    def length_result(self, nsn: str) -> str:
        """phonenumbers' `_test_number_length` for the general description."""
        if not self.lengths:
            return "invalid_length"
        actual = len(nsn)
        if actual in self.local_lengths:
            return "local_only"
        if self.lengths[0] == actual:
            return "possible"
        if self.lengths[0] > actual:
            return "too_short"
        if self.lengths[-1] < actual:
            return "too_long"
        return "possible" if actual in self.lengths[1:] else "invalid_length"

    def strip_national_prefix(self, number: str) -> str:
        """phonenumbers' `_maybe_strip_national_prefix_carrier_code` (carrier code dropped)."""
        if not number or self.national_prefix is None:
            return number
        match = self.national_prefix.match(number)
        if not match:
            return number
        viable = self.general_matches(number)
        groups = match.groups()
        if not self.transform or groups[len(groups) - 1] is None:
            if viable and not self.general_matches(number[match.end() :]):
                return number
            return number[match.end() :]
        transformed = self.national_prefix.sub(self.transform, number, count=1)
        if viable and not self.general_matches(transformed):
            return number
        return transformed


@cache
def _country_rules(country_code: int) -> _Rules | None:
    """The rules `parse` uses for a number with this country code (its main region's)."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    return None if metadata is None else _Rules(metadata)


@cache
def _region_rules(region: str) -> _Rules | None:
    metadata = PhoneMetadata.metadata_for_region(region, None)
    return None if metadata is None else _Rules(metadata)


@cache
def _type_rules(country_code: int) -> _Rules | tuple[_Rules, ...] | None:
    """What `region_code_for_number` picks from: the code's only region (taken
    as it is), or its regions in order (each tried)."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    if len(regions) == 1:
        return _country_rules(country_code)
    return tuple(rules for region in regions if (rules := _region_rules(region)) is not None)


#: country calling codes by their digits
_COUNTRY_CODES = {str(code): code for code in COUNTRY_CODE_TO_REGION_CODE}


#: country codes whose mobile numbers have a place (`is_number_type_geographical`)
_GEO_MOBILE_CODES = frozenset(
    code
    for code in COUNTRY_CODE_TO_REGION_CODE
    if phonenumbers.is_number_type_geographical(PhoneNumberType.MOBILE, code)
)
_GEOGRAPHICAL_TYPES = frozenset({PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


def _known(zones: Sequence[str]) -> tuple[str, ...]:
    return tuple(zone for zone in zones if zone != _UNKNOWN_TZ)


#: the longest TIMEZONE_DATA key starting with each digit: it alone decides the answer
_ZONE_KEY_LENGTH: dict[str, int] = {}
for _key in TIMEZONE_DATA:
    _ZONE_KEY_LENGTH[_key[0]] = max(len(_key), _ZONE_KEY_LENGTH.get(_key[0], 0))


def _geographical_zones(digits: str) -> tuple[str, ...]:
    """`time_zones_for_geographical_number`: the longest prefix in TIMEZONE_DATA."""
    for length in range(len(digits), 0, -1):
        zones = TIMEZONE_DATA.get(digits[:length])
        if zones is not None:
            return _known(zones)
    return ()


@cache
def _country_zones(country_code: int) -> tuple[str, ...]:
    """`_country_level_time_zones_for_number`, prefix lengths and all."""
    code = str(country_code)
    for length in range(TIMEZONE_LONGEST_PREFIX, 0, -1):
        zones = TIMEZONE_DATA.get(code[: 1 + length])
        if zones is not None:
            return _known(zones)
    return ()


class _FastPath:
    """phonenumbers' parse + number_type for input that is only `+` and ASCII digits.

    Each step mirrors the library function named in its comment, so results are
    the library's; `None` sends the input to the library itself (rare inputs,
    and every input that would raise).
    """

    def __init__(self, region: str) -> None:
        rules = _region_rules(region)
        if rules is None:  # pragma: no cover - check_region guards this
            raise SheetError(f"no phone metadata for region {region}")
        self.region = region
        self.rules = rules

    def parse(self, text: str) -> tuple[int, str] | None:
        """(country code, national significant number) as `phonenumbers.parse` finds them."""
        rules = self.rules
        # _maybe_extract_country_code / _maybe_strip_i18n_prefix_and_normalize
        from_default = False
        if text[0] == "+":
            full = text[1:]
        else:
            full = text
            match = rules.idd.match(text)
            if match is None or text[match.end() : match.end() + 1] == "0":
                from_default = True
            else:
                full = text[match.end() :]
        country_code = 0
        national = ""
        if not from_default:
            if len(full) <= 2 or full[0] == "0":
                return None
            for size in (1, 2, 3):
                country_code = _COUNTRY_CODES.get(full[:size], 0)
                if country_code:
                    national = full[size:]
                    break
            else:
                return None
        elif full.startswith(rules.country_code_str):
            potential = rules.strip_national_prefix(full[len(rules.country_code_str) :])
            if (
                not rules.general_matches(full) and rules.general_matches(potential)
            ) or rules.length_result(full) == "too_long":
                country_code, national = rules.country_code, potential
        # parse(): the metadata of the number's own region (the default region's
        # own when it is the main region of the code)
        if country_code:
            found = _country_rules(country_code)
            if found is None:  # pragma: no cover - the code came from the same map
                return None
            rules = found
        else:
            national = text
            country_code = rules.country_code
        if len(national) < 2:
            return None
        potential = rules.strip_national_prefix(national)
        if rules.length_result(potential) not in ("too_short", "local_only", "invalid_length"):
            national = potential
        if not 2 <= len(national) <= 17:
            return None
        return country_code, national

    @staticmethod
    def number_type(country_code: int, nsn: str) -> int:
        """phonenumbers.number_type (region_code_for_number + _number_type_helper)."""
        candidates = _type_rules(country_code)
        if candidates is None:
            return PhoneNumberType.UNKNOWN
        if isinstance(candidates, _Rules):
            return candidates.number_type(nsn)
        for rules in candidates:
            if rules.leading_digits is not None:
                if rules.leading_digits.match(nsn):
                    return rules.number_type(nsn)
                continue
            found = rules.number_type(nsn)
            if found != PhoneNumberType.UNKNOWN:
                return found
        return PhoneNumberType.UNKNOWN


class _Normaliser:
    """The number policy for one default region.

    It keeps only time zones by number prefix; callers that see the same cell
    many times memoise whole answers themselves (`validate_sheet` does, per sheet).
    """

    def __init__(self, region: str, *, fast_path: bool | None = None) -> None:
        """`fast_path`: None follows `DIALER_NUMBER_FAST_PATH`; False sends every number
        through phonenumbers itself."""
        self.region = check_region(region)
        self.fast = _FastPath(self.region)
        if fast_path is None:
            from campaign.config import get_settings

            fast_path = get_settings().number_fast_path
        self.fast_path = fast_path
        self._zones: dict[str, tuple[str, ...]] = {}

    def __call__(self, raw: str) -> NormalisedNumber:
        text = _clean_cell(raw)
        if not text:
            return NormalisedNumber(raw, Reason.EMPTY)
        compact = _compact(text)
        body = compact[1:] if compact[:1] == "+" else compact
        if 3 <= len(body) <= 16 and body.isascii() and body.isdigit():
            # One plain number, the common case: no text, no extension.
            if compact[:2] == "00" and not self.fast.rules.idd.match(compact):
                compact = "+" + compact[2:]
            parsed = self.fast.parse(compact) if self.fast_path else None
            if parsed is not None:
                country_code, nsn = parsed
                number_type = self.fast.number_type(country_code, nsn)
                return self._verdict(raw, country_code, nsn, number_type, None)
            return self._library(raw, compact, None)
        first, extension = _first_number(text)
        if first is None or not _DIGIT.search(first):
            return NormalisedNumber(raw, Reason.UNPARSEABLE)
        first = self._international_00(first)
        if len(first.translate(_PUNCTUATION)) > 16 and any(char.isspace() for char in first):
            first = self._first_of_run(first)
        return self._library(raw, first, extension)

    def _first_of_run(self, text: str) -> str:
        """Two numbers separated only by spaces: the first one phonenumbers finds in the text."""
        for match in phonenumbers.PhoneNumberMatcher(text, self.region):
            return match.raw_string
        return text

    def _international_00(self, text: str) -> str:
        """`00` starts an international number even where the region's own prefix differs."""
        match = _LEADING_00.match(text)
        if match is None:
            return text
        if self.fast.rules.idd.match(text[match.end() - 2 :].translate(_PUNCTUATION)):
            return text  # the region's own international prefix: phonenumbers handles it
        return "+" + text[match.end() :]

    def _library(self, raw: str, text: str, extension: str | None) -> NormalisedNumber:
        try:
            number = phonenumbers.parse(text, self.region)
        except NumberParseException as exc:
            if exc.error_type == NumberParseException.NOT_A_NUMBER:
                return NormalisedNumber(raw, Reason.UNPARSEABLE)
            return NormalisedNumber(raw, Reason.INVALID)
        nsn = phonenumbers.national_significant_number(number)
        if phonenumbers.is_valid_number(number):
            number_type = phonenumbers.number_type(number)
        else:
            number_type = PhoneNumberType.UNKNOWN
        country_code = number.country_code or 0
        return self._verdict(raw, country_code, nsn, number_type, extension or number.extension)

    def _verdict(
        self, raw: str, country_code: int, nsn: str, number_type: int, extension: str | None
    ) -> NormalisedNumber:
        e164 = f"+{country_code}{nsn}"
        type_name = _TYPE_NAMES.get(number_type, "unknown")
        if len(e164) > MAX_E164:  # no such number: keep none (it would not fit either)
            return NormalisedNumber(raw, Reason.INVALID)
        if number_type == PhoneNumberType.UNKNOWN:
            return NormalisedNumber(raw, Reason.INVALID, e164, extension or None, type_name)
        if number_type in NOT_DIALABLE_TYPES:
            return NormalisedNumber(
                raw, Reason.NOT_DIALABLE_TYPE, e164, extension or None, type_name
            )
        zones = self._timezones(e164, country_code, number_type)
        return NormalisedNumber(raw, None, e164, extension or None, type_name, zones)

    def _timezones(self, e164: str, country_code: int, number_type: int) -> tuple[str, ...]:
        """phonenumbers.timezone.time_zones_for_number, from the E.164 we already have;
        remembered by the prefix that decides it (numbers of one area share it)."""
        if number_type not in _GEOGRAPHICAL_TYPES and not (
            number_type == PhoneNumberType.MOBILE and country_code in _GEO_MOBILE_CODES
        ):
            return _country_zones(country_code)
        key = e164[1 : 1 + _ZONE_KEY_LENGTH.get(e164[1], 0)]
        zones = self._zones.get(key)
        if zones is None:
            zones = self._zones[key] = _geographical_zones(key)
        return zones


def _clean_cell(raw: str) -> str:
    """Undo what spreadsheets do to numbers: apostrophes, `="..."`, `.0`, 4.155552683E+09."""
    text = raw.strip()
    if text[:1] in ("'", "\u2019"):
        text = text.lstrip("'\u2019").strip()
    if text[:2] == '="':
        match = _EXCEL_TEXT_FORMULA.fullmatch(text)
        if match:
            text = match.group(1).strip()
    if "." in text or "e" in text or "E" in text:
        match = _EXCEL_FLOAT.fullmatch(text)
        if match:
            return match.group(1)
        if _SCIENTIFIC.fullmatch(text):
            return _from_scientific(text)
    return text


def _from_scientific(text: str) -> str:
    """Digits of an exact scientific-notation number; "?" (unparseable) when digits were lost."""
    try:
        value = Decimal(text.replace(",", "."))
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        return "?"
    if value != value.to_integral_value():
        return "?"
    mantissa = _SCIENTIFIC.fullmatch(text)
    assert mantissa is not None
    significant = 1 + len(mantissa.group(2) or "")
    digits = str(int(value))
    # 4.15555E+09 has lost its last digits: refuse to guess them.
    return digits if significant >= len(digits) else "?"


def _first_number(text: str) -> tuple[str | None, str | None]:
    """The first number of a cell holding several, and an extension written apart from it."""
    if "/" in text:
        text = ",".join(_join_short_slashes(text.split("/")))
    parts = [part for part in _SPLIT.split(text) if part]
    if len(parts) <= 1:
        return text, None
    for index, part in enumerate(parts):
        if not _DIGIT.search(part):
            continue
        extension = None
        if index + 1 < len(parts):
            match = _EXTENSION_ONLY.fullmatch(parts[index + 1].strip())
            if match:
                extension = match.group(1) or match.group(2)
        return part, extension
    return None, None


def _join_short_slashes(pieces: list[str]) -> list[str]:
    """Re-join slash-separated pieces unless both sides hold a whole number (7+ digits)."""
    joined = [pieces[0]]
    for piece in pieces[1:]:
        if _digit_count(joined[-1]) >= 7 and _digit_count(piece) >= 7:
            joined.append(piece)
        else:
            joined[-1] += "/" + piece
    return joined


def _digit_count(text: str) -> int:
    return sum(char.isdigit() for char in text)


def normalise_number(raw: str, region: str) -> NormalisedNumber:
    """One number through the policy (for `dialer call NUMBER`, `dialer dnc add`)."""
    return _Normaliser(region)(raw)


# --------------------------------------------------------------------------- reading

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
    with _collector_paused():
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


def variable_columns(path: Path, region: str) -> list[str]:
    """The headers of a sheet's variable columns (what script placeholders may name),
    from its first rows."""
    data = read_sheet(path, preview=_SAMPLE)
    columns = find_columns(data, check_region(region))
    return [data.headers[index] for index in columns.variables]


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
    return rows, [_letter(column) for column in columns]


# --- XLSX: the sheet's XML, streamed -------------------------------------------------

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
                "from campaign.contacts import _calamine_child; _calamine_child()",
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
    letters += [_letter(index) for index in range(len(letters), width)]
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


def _letter(index: int) -> str:
    """Spreadsheet column letters: 0 -> A, 26 -> AA."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


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


# --------------------------------------------------------------------------- columns


def _vocabulary(names: str) -> frozenset[str]:
    """Header words, written `a|b|c` to keep the lists short."""
    return frozenset(names.split("|"))


def _words(header: str) -> str:
    """Lower case, no accents, punctuation to spaces: 'Teléfono (móvil)' -> 'telefono movil'."""
    decomposed = unicodedata.normalize("NFKD", header.casefold())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", plain).split())


_PHONE_WORDS = _vocabulary(
    "phone|phones|mobile|cell|cellphone|mobilephone|tel|telephone|telefon|telefono|"
    "telefone|telefonnummer|handy|handynummer|mobil|mobilnummer|rufnummer|msisdn|gsm|"
    "celular|movil|portable|cellulare|telefoonnummer|mobiel|whatsapp|phonenumber|tlf|"
    "telf|fon"
)
_PHONE_WEAK = _vocabulary("number|numero|num|nr|no|nummer")
_NOT_PHONE = _vocabulary(
    "type|ext|extension|country|code|id|email|mail|fax|account|order|zip|postal|of|"
    "count|date|status|opt|consent|verified|valid|carrier|prefix|area|employees"
)
_FULL_NAME = _vocabulary(
    "nombre|nombre completo|contact name|nom complet|client|client name|person|"
    "lead name|full name|nome|naam|name|fullname|customer|contact|customer name|"
    "display name"
)
_FIRST_NAME = _vocabulary(
    "first name|firstname|first|given name|forename|vorname|prenom|nombre|nome|voornaam"
)
_LAST_NAME = _vocabulary(
    "last name|lastname|surname|family name|last|nachname|apellido|apellidos|nom|"
    "nom de famille|cognome|achternaam"
)
_TIMEZONE = _vocabulary(
    "timezone|time zone|tz|zone|iana timezone|iana|zona horaria|fuseau horaire|"
    "zeitzone|fuso orario|tijdzone"
)
_EXTENSION = _vocabulary("ext|extension|ext no|durchwahl|poste|anexo|extension number")
_NAME_CELL = re.compile(r"[^\W\d_]+(?:[ .'’-]+[^\W\d_]+){0,4}\.?")
_SAMPLE = 200


@dataclass(frozen=True, slots=True)
class Columns:
    """Which columns mean what (indexes into `Sheet.headers`)."""

    phone: int
    #: other phone columns, tried in order when the phone cell is blank
    phone_fallbacks: tuple[int, ...] = ()
    #: one column, or first-name and last-name columns joined by a space
    name: tuple[int, ...] = ()
    timezone: int | None = None
    extension: int | None = None
    variables: tuple[int, ...] = ()

    def describe(self, headers: Sequence[str]) -> dict[str, Any]:
        return {
            "phone": headers[self.phone],
            "name": " + ".join(headers[index] for index in self.name) or None,
            "timezone": None if self.timezone is None else headers[self.timezone],
            "extension": None if self.extension is None else headers[self.extension],
        }


def _phone_score(header: str) -> int:
    words = _words(header)
    tokens = set(words.split())
    if tokens & _NOT_PHONE:
        return 0
    if tokens & _PHONE_WORDS:
        return 2
    if words in _PHONE_WEAK or tokens & _PHONE_WEAK:
        return 1
    return 0


def find_columns(sheet: Sheet, region: str, phone_column: str | None = None) -> Columns:
    """Find the phone, name, time-zone and extension columns; the rest are variables."""
    normaliser = _Normaliser(region)
    width = len(sheet.headers)
    if phone_column is not None:
        phone = _column_by_option(sheet, phone_column)
        fallbacks: tuple[int, ...] = ()
    else:
        phone, fallbacks = _find_phone(sheet, normaliser)
    taken = {phone}
    words = [_words(header) if sheet.has_header else "" for header in sheet.headers]
    timezone = _find_by_header(words, _TIMEZONE, taken)
    if timezone is None:
        timezone = _find_timezone_by_content(sheet, taken)
    if timezone is not None:
        taken.add(timezone)
    extension = _find_by_header(words, _EXTENSION, taken)
    if extension is not None:
        taken.add(extension)
    name = _find_name(sheet, words, taken)
    taken.update(name)
    variables = tuple(index for index in range(width) if index not in taken)
    return Columns(phone, fallbacks, name, timezone, extension, variables)


def _column_by_option(sheet: Sheet, option: str) -> int:
    wanted = option.strip()
    for index, header in enumerate(sheet.headers):
        if header.strip().casefold() == wanted.casefold():
            return index
    if re.fullmatch(r"[A-Za-z]{1,3}", wanted):
        for index, letter in enumerate(sheet.letters):
            if letter == wanted.upper():
                return index
    if wanted.isdigit() and 1 <= int(wanted) <= len(sheet.headers):
        return int(wanted) - 1
    raise SheetError(
        f"{sheet.source}: no column {option!r}; columns: {', '.join(sheet.headers)}"
        " (give a header, a letter such as B, or a 1-based number)"
    )


def _parse_share(sheet: Sheet, index: int, normaliser: _Normaliser) -> int:
    """How many of the first rows' cells in a column read as phone numbers."""
    return sum(1 for cell in sheet.column(index, _SAMPLE) if cell.strip() and normaliser(cell).e164)


def _find_phone(sheet: Sheet, normaliser: _Normaliser) -> tuple[int, tuple[int, ...]]:
    width = len(sheet.headers)
    scores = [_phone_score(h) if sheet.has_header else 0 for h in sheet.headers]
    strong = [index for index in range(width) if scores[index] == 2]
    if strong:
        shares = {index: _parse_share(sheet, index, normaliser) for index in strong}
        ranked = sorted(strong, key=lambda index: (-shares[index], index))
        return ranked[0], tuple(index for index in ranked[1:] if shares[index])
    sampled = min(len(sheet.rows), _SAMPLE)
    weak = [index for index in range(width) if scores[index] == 1]
    for index in weak:
        if _parse_share(sheet, index, normaliser) * 2 >= max(1, sampled):
            return index, ()
    shares = {index: _parse_share(sheet, index, normaliser) for index in range(width)}
    best = min(range(width), key=lambda index: (-shares[index], index))
    if shares[best] * 2 < max(1, sampled):
        raise SheetError(
            f"{sheet.source}: no phone column found (columns: {', '.join(sheet.headers)});"
            " name it with --phone-column"
        )
    return best, ()


def _find_by_header(words: list[str], names: frozenset[str], taken: set[int]) -> int | None:
    for index, header in enumerate(words):
        if index not in taken and header in names:
            return index
    return None


def _find_timezone_by_content(sheet: Sheet, taken: set[int]) -> int | None:
    zones = _zone_names()
    for index in range(len(sheet.headers)):
        if index in taken:
            continue
        cells = [cell.strip() for cell in sheet.column(index, _SAMPLE) if cell.strip()]
        if len(cells) >= 3 and sum(cell.casefold() in zones for cell in cells) >= 0.8 * len(cells):
            return index
    return None


def _find_name(sheet: Sheet, words: list[str], taken: set[int]) -> tuple[int, ...]:
    first = _find_by_header(words, _FIRST_NAME, taken)
    last = _find_by_header(words, _LAST_NAME, taken | ({first} if first is not None else set()))
    if first is not None and last is not None and words[first] not in _FULL_NAME - {"nombre"}:
        return (first, last)
    full = _find_by_header(words, _FULL_NAME, taken)
    if full is not None:
        return (full,)
    single = first if first is not None else last
    if single is not None:
        return (single,)
    if sheet.has_header:
        return ()  # a header row without a name header: do not guess from "City" or "Company"
    for index in range(len(sheet.headers)):
        if index in taken:
            continue
        cells = [cell.strip() for cell in sheet.column(index, _SAMPLE)]
        filled = [cell for cell in cells if cell]
        names = sum(bool(_NAME_CELL.fullmatch(cell)) for cell in filled)
        if filled and len(filled) * 2 >= len(cells) and names >= 0.6 * len(filled):
            return (index,)
    return ()


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """IANA names by their case-folded spelling."""
    return {name.casefold(): name for name in available_timezones()}


# --------------------------------------------------------------------------- validating


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


class AcceptedContacts(Sequence[ParsedContact]):
    """The dialable rows of a sheet; each becomes a `ParsedContact` when it is read.

    `dialer check` only counts them, and a million records with a dict of
    variables each would cost more than checking their numbers did.
    """

    __slots__ = ("_columns", "_numbers", "_positions", "_sheet", "_variables")

    def __init__(self, sheet: Sheet, columns: Columns) -> None:
        self._sheet = sheet
        self._columns = columns
        self._variables = [(sheet.headers[index], index) for index in columns.variables]
        self._positions: list[int] = []  #: indexes into `sheet.rows`
        self._numbers: list[NormalisedNumber] = []

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> ParsedContact: ...

    @overload
    def __getitem__(self, index: slice) -> list[ParsedContact]: ...

    def __getitem__(self, index: int | slice) -> ParsedContact | list[ParsedContact]:
        if isinstance(index, slice):
            return [self._contact(i) for i in range(len(self))[index]]
        return self._contact(range(len(self))[index])

    def __iter__(self) -> Iterator[ParsedContact]:
        return map(self._contact, range(len(self)))

    def __repr__(self) -> str:
        return f"<{len(self)} accepted contacts of {self._sheet.source}>"

    def e164s(self) -> list[str]:
        return [number.e164 for number in self._numbers if number.e164]

    def _contact(self, index: int) -> ParsedContact:
        position, number = self._positions[index], self._numbers[index]
        row = self._sheet.rows[position]
        columns, width = self._columns, len(row)
        assert number.e164 is not None
        zone = _zone_names().get(_cell(row, columns.timezone).casefold())
        name = " ".join(cell for index in columns.name if (cell := _cell(row, index)))
        return ParsedContact(
            self._sheet.row_numbers[position],
            number.e164,
            number.raw,
            _extension(number, row, columns),
            name or None,
            _narrowed(number.timezones, zone),
            {header: (row[i] if i < width else "") for header, i in self._variables},
        )


def _narrowed(number_zones: tuple[str, ...], stated: str | None) -> tuple[str, ...]:
    """A stated zone narrows the hours, never widens them: the window must be open in it
    and in every zone of the number (a +1 212 number stays in New York's hours)."""
    if stated is None or stated in number_zones:
        return number_zones
    return (*number_zones, stated)


def _extension(number: NormalisedNumber, row: Row, columns: Columns) -> str | None:
    """The number's own extension, else the extension column's digits."""
    if number.extension is not None or columns.extension is None:
        return number.extension
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
    duplicates: list[Duplicate] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
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
_PROGRESS_EVERY = 10_000


def validate_sheet(
    source: str | Path | Sheet,
    *,
    region: str,
    phone_column: str | None = None,
    dnc: frozenset[str] | set[str] = frozenset(),
    sheet: str | None = None,
    progress: Progress | None = None,
) -> SheetResult:
    """Apply the number policy to every row; nothing is written anywhere."""
    region = check_region(region)
    data = source if isinstance(source, Sheet) else read_sheet(source, sheet=sheet)
    columns = find_columns(data, region, phone_column)
    headers, rows, row_numbers = data.headers, data.rows, data.row_numbers
    accepted = AcceptedContacts(data, columns)
    result = SheetResult(data.source, region, len(rows), columns.describe(headers), accepted)
    normaliser = _Normaliser(region)
    # Each distinct cell is normalised once per sheet (sheets repeat cells).
    memo: dict[str, NormalisedNumber] = {}
    first_row: dict[str, int] = {}
    zones = _zone_names()
    phone, fallbacks, tz_column = columns.phone, columns.phone_fallbacks, columns.timezone
    has_extension = columns.extension is not None
    positions, numbers = accepted._positions, accepted._numbers  # filled in place, row order
    total = len(rows)
    with _collector_paused():
        phones = [row[phone] if phone < len(row) else "" for row in rows]
        for position, raw in enumerate(phones):
            if progress is not None and position % _PROGRESS_EVERY == 0:
                progress(position, total)
            if fallbacks and not raw.strip():
                row = rows[position]
                raw = next((row[i] for i in fallbacks if i < len(row) and row[i].strip()), raw)
            parsed = memo.get(raw)
            if parsed is None:
                parsed = memo[raw] = normaliser(raw)
            e164 = parsed.e164
            if parsed.reason is not None or e164 is None or e164 in dnc:
                reason = parsed.reason or (Reason.INVALID if e164 is None else Reason.DO_NOT_CALL)
                row = rows[position]
                result.rejected.append(
                    Rejected(row_numbers[position], raw, reason, e164, _cells(headers, row))
                )
                continue
            number = row_numbers[position]
            if has_extension or parsed.extension:
                extension = _extension(parsed, rows[position], columns)
                if extension is not None and len(extension) > MAX_EXTENSION:
                    result.rejected.append(
                        Rejected(
                            number,
                            raw,
                            Reason.BAD_EXTENSION,
                            e164,
                            _cells(headers, rows[position]),
                        )
                    )
                    continue
            earlier = first_row.setdefault(e164, number)
            if earlier != number:
                result.duplicates.append(Duplicate(number, e164, raw, earlier))
                continue
            positions.append(position)
            numbers.append(parsed)
            if tz_column is not None:
                cell = _cell(rows[position], tz_column)
                if cell and cell.casefold() not in zones:
                    result.warnings.append(
                        (number, f"unknown time zone {cell!r}; using the number's zones only")
                    )
    if progress is not None:
        progress(total, total)
    log.debug(
        "checked %s: %d rows, %d accepted, %d duplicates, %d rejected",
        data.source,
        result.rows,
        len(result.accepted),
        len(result.duplicates),
        len(result.rejected),
    )
    return result


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while a sheet's results are built.

    A million rows make about a million new objects (answers, rejected rows);
    left alone, the collector walks them again and again as they pile up, and
    once more when they are done (a quarter of the time of checking a 1M-row
    CSV). They form no cycles, so they skip the young generations and join the
    oldest one directly, which a full collection still visits.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:  # never thaw what someone else froze
            gc.freeze()  # every tracked object to the permanent generation (no walk)...
            gc.unfreeze()  # ...and back, into the oldest generation
        if enabled:
            gc.enable()


def _cells(headers: list[str], row: Row) -> dict[str, str]:
    if len(row) == len(headers):
        return dict(zip(headers, row, strict=True))
    return {header: (row[i] if i < len(row) else "") for i, header in enumerate(headers)}
