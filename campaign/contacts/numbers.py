"""The number policy for one cell: undo what spreadsheets do to numbers, parse with the
campaign's default region unless the number carries its own `+` or `00`, accept only
numbers phonenumbers calls valid and of a dialable type, keep them as E.164.

Plain inputs (digits with common punctuation, the vast majority) take the fast path
(`campaign.contacts.fast_path`); everything else goes through phonenumbers itself.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import NamedTuple

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers.phonenumberutil import NumberParseException

from campaign.contacts.errors import SheetError
from campaign.contacts.fast_path import (
    _GEO_MOBILE_CODES,
    _GEOGRAPHICAL_TYPES,
    _ZONE_KEY_LENGTH,
    _country_zones,
    _FastPath,
    _geographical_zones,
)


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
