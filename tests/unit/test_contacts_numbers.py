"""The number policy, one cell at a time, and the fast path held to phonenumbers' answers."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from phonenumbers.timezone import time_zones_for_number

from campaign.contacts import (
    MAX_E164,
    NormalisedNumber,
    Reason,
    SheetError,
    normalise_number,
)
from campaign.contacts.numbers import _Normaliser

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("1-415-555-2671", "US", "+14155552671"),
        ("14155552671", "US", "+14155552671"),
        ("+1 415 555 2671", "GB", "+14155552671"),  # its own + beats the default region
        ("0044 20 7946 0958", "US", "+442079460958"),  # 00 even where the IDD is 011
        ("011 44 20 7946 0958", "US", "+442079460958"),  # the region's own IDD
        ("07911 123456", "GB", "+447911123456"),
        ("+44 (0) 20 7946 0958", "GB", "+442079460958"),
        ("030/1234567", "DE", "+49301234567"),  # the slash is part of a German number
        ("+39 06 1234 5678", "IT", "+390612345678"),  # Italian leading zero kept
        ("4155552683.0", "US", "+14155552683"),  # Excel float exported as text
        ("4155552683", "US", "+14155552683"),
        ("4.155552683E+09", "US", "+14155552683"),  # scientific, but every digit is there
        ("'4155552671", "US", "+14155552671"),  # Excel's text apostrophe
        ('="0412345678"', "AU", "+61412345678"),  # CSV trick to keep the leading zero
        ("\u00a0415\u00a0555\u00a02671 ", "US", "+14155552671"),  # non-breaking spaces
    ],
)
def test_accepted_numbers_normalise_to_e164(raw: str, region: str, e164: str) -> None:
    number = normalise_number(raw, region)
    assert number.reason is None, number
    assert number.e164 == e164


@pytest.mark.parametrize(
    ("raw", "e164", "extension"),
    [
        ("415-555-2671 x12", "+14155552671", "12"),
        ("415-555-2671 ext. 12", "+14155552671", "12"),
        ("415-555-2671, ext. 12", "+14155552671", "12"),
        ("(415) 555-2671 extension 7", "+14155552671", "7"),
        ("4155552671", "+14155552671", None),
    ],
)
def test_extension_is_kept_apart(raw: str, e164: str, extension: str | None) -> None:
    number = normalise_number(raw, "US")
    assert (number.reason, number.e164, number.extension) == (None, e164, extension)


@pytest.mark.parametrize(
    "raw",
    [
        "415-555-2671, 212-555-0187",
        "415-555-2671; 212-555-0187",
        "415-555-2671 / 212-555-0187",
        "4155552671/2125550187",
        "415-555-2671 or 212-555-0187",
        "415-555-2671\n212-555-0187",
        "4155552671 2125550187",  # two runs of digits with only a space between
    ],
)
def test_cell_with_two_numbers_takes_the_first(raw: str) -> None:
    assert normalise_number(raw, "US").e164 == "+14155552671"


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("", "US", Reason.EMPTY),
        ("   ", "US", Reason.EMPTY),
        ("n/a", "US", Reason.UNPARSEABLE),
        ("unknown", "US", Reason.UNPARSEABLE),
        ("4.15555E+09", "US", Reason.UNPARSEABLE),  # digits lost to Excel: never guess them
        ("123", "US", Reason.INVALID),
        ("555-1234", "US", Reason.INVALID),  # no area code
        ("+1 415 555 26711", "US", Reason.INVALID),
        ("+999 1234 5678", "US", Reason.INVALID),  # no such country code
        ("1-900-555-1234", "US", Reason.NOT_DIALABLE_TYPE),  # premium rate
        ("09001 234567", "GB", Reason.NOT_DIALABLE_TYPE),  # premium rate
        ("0 884 01 23 45", "FR", Reason.NOT_DIALABLE_TYPE),  # shared cost
        ("076 4012 3456", "GB", Reason.NOT_DIALABLE_TYPE),  # pager
        ("055 1234 5678", "GB", Reason.NOT_DIALABLE_TYPE),  # UAN
    ],
)
def test_rejections_carry_a_reason(raw: str, region: str, reason: Reason) -> None:
    number = normalise_number(raw, region)
    assert number.reason is reason, number
    assert not number.ok


def test_dialable_types_include_toll_free_and_mobile() -> None:
    assert normalise_number("+1 800 555 0199", "US").number_type == "toll_free"
    assert normalise_number("07911 123456", "GB").number_type == "mobile"


def test_timezones_from_the_number_keep_every_zone() -> None:
    assert normalise_number("(415) 555-2671", "US").timezones == ("America/Los_Angeles",)
    assert normalise_number("(212) 555-0187", "US").timezones == ("America/New_York",)
    # A UK mobile is not tied to one place: all of the UK's zones, calling hours hold in each.
    zones = normalise_number("07911 123456", "GB").timezones
    assert "Europe/London" in zones and len(zones) > 1
    assert "Etc/Unknown" not in zones


def test_unknown_region_is_a_sheet_error() -> None:
    with pytest.raises(SheetError, match="unknown region 'XX'"):
        normalise_number("4155552671", "XX")


def test_region_code_is_case_insensitive() -> None:
    assert normalise_number("07911 123456", "gb").e164 == "+447911123456"


# --------------------------------------------------------------------------- fast path


def _reference(raw: str, region: str) -> NormalisedNumber:
    """The policy written with phonenumbers' public API only: slow, obviously right."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.NOT_A_NUMBER:
            return NormalisedNumber(raw, Reason.UNPARSEABLE)
        return NormalisedNumber(raw, Reason.INVALID)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if len(e164) > MAX_E164:  # the policy keeps no number longer than the ledger's column
        return NormalisedNumber(raw, Reason.INVALID)
    if not phonenumbers.is_valid_number(number):
        return NormalisedNumber(raw, Reason.INVALID, e164, None, "unknown")
    number_type = phonenumbers.number_type(number)
    name = next(
        k.lower() for k, v in vars(PhoneNumberType).items() if k.isupper() and v == number_type
    )
    if number_type in {
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.UAN,
        PhoneNumberType.PAGER,
        PhoneNumberType.VOICEMAIL,
    }:
        return NormalisedNumber(raw, Reason.NOT_DIALABLE_TYPE, e164, None, name)
    zones = tuple(z for z in time_zones_for_number(number) if z != "Etc/Unknown")
    return NormalisedNumber(raw, None, e164, None, name, zones)


def _corpus() -> list[str]:
    """Example numbers of every region, type and non-geographic code, written the ways
    people write them, plus random digit strings (bare, with `+`, with a trunk or
    international prefix, with punctuation)."""
    examples = [
        example
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for number_type in range(11)
        if (example := phonenumbers.example_number_for_type(region, number_type)) is not None
    ]
    examples += [
        example
        for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
        if (example := phonenumbers.example_number_for_non_geo_entity(code)) is not None
    ]
    texts: list[str] = []
    for example in examples:
        national = phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)
        international = phonenumbers.format_number(example, PhoneNumberFormat.INTERNATIONAL)
        e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
        texts += [national, international, e164, e164[1:], "00" + e164[1:]]
    rng = random.Random(7)
    for _ in range(4000):
        prefix = rng.choice(["", "", "+", "0", "1", "011", "8", "+1", "+44", "+7"])
        # at most 16 digits: longer cells are read as two numbers (our policy, not the library's)
        length = rng.randint(3, 16 - len(prefix.lstrip("+")))
        text = prefix + "".join(rng.choice("0123456789") for _ in range(length))
        if rng.random() < 0.3:  # spaces, dashes, dots and brackets as people type them
            cut = rng.randint(1, len(text) - 1)
            text = f"({text[:cut]}) {text[cut:-2]}{rng.choice('-. ')}{text[-2:]}"
        texts.append(text)
    return texts


#: Default regions: big ones, ones with trunk-prefix transform rules (AR, BR, MX),
#: and ones sharing a country code with a main region (CA and +1, GG and +44,
#: KZ and +7, VA and +39).
REGIONS = [
    "US", "CA", "GB", "GG", "DE", "IT", "VA", "FR", "BR", "AR", "MX", "IN", "AU", "RU", "KZ",
    "JP", "CN", "NL",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _corpus()


@pytest.mark.parametrize("region", REGIONS)
def test_fast_path_gives_the_library_answer(region: str, corpus: list[str]) -> None:
    """Every cell, as written and as bare digits: ours equals phonenumbers' public API."""
    normaliser = _Normaliser(region)
    fast = 0
    mismatches = []
    for text in corpus:
        compact = "".join(ch for ch in text if ch.isdigit() or ch == "+")
        if compact.startswith("00"):
            continue  # our `00` rule deliberately differs from the region's own IDD rules
        fast += normaliser.fast.parse(compact) is not None
        for spelling in {text, compact}:
            ours = normaliser(spelling)
            expected = _reference(spelling, region)
            if ours != expected:
                mismatches.append((spelling, ours, expected))
    assert fast > 2000  # the fast path itself was exercised, not only the library fallback
    assert mismatches == []


@pytest.mark.parametrize("region", ["US", "GB", "BR"])
def test_library_path_gives_the_library_answer(region: str, corpus: list[str]) -> None:
    """`DIALER_NUMBER_FAST_PATH=false`: no cell takes the fast path, the answers are the same."""
    normaliser = _Normaliser(region, fast_path=False)
    normaliser.fast.parse = None  # type: ignore[assignment,method-assign]  # must not be called
    mismatches = []
    for text in corpus:
        compact = "".join(ch for ch in text if ch.isdigit() or ch == "+")
        if compact.startswith("00"):
            continue
        for spelling in {text, compact}:
            ours = normaliser(spelling)
            if ours != _reference(spelling, region):
                mismatches.append(spelling)
    assert mismatches == []
