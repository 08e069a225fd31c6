"""Column detection: which column holds the phone number, the name, the time zone and
the extension (by header, else by content); every other column is a variable."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

from campaign.contacts.errors import SheetError
from campaign.contacts.numbers import _Normaliser, check_region
from campaign.contacts.reading import read_sheet
from campaign.contacts.sheet import Sheet


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


def variable_columns(path: Path, region: str) -> list[str]:
    """The headers of a sheet's variable columns (what script placeholders may name),
    from its first rows."""
    data = read_sheet(path, preview=_SAMPLE)
    columns = find_columns(data, check_region(region))
    return [data.headers[index] for index in columns.variables]
