"""The number fast path: phonenumbers' own `parse` / `number_type` / time-zone steps for
input that is only `+` and ASCII digits, with each region's type patterns compiled into
one regex per number length.

It follows the library's internals, so `pyproject.toml` pins phonenumbers to the release
`tests/unit/test_contacts_numbers.py` has held the two paths to the same answers on;
`DIALER_NUMBER_FAST_PATH=false` sends every number through the library itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType, re_util
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from campaign.contacts.errors import SheetError

# Keep every compiled metadata pattern (phonenumbers' own option; re's cache is too small).
re_util.enable_pattern_cache()


_UNKNOWN_TZ = "Etc/Unknown"


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
