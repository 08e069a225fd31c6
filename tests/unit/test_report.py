"""Pure pieces of the campaign workbook: quantiles, cell safety, pricing, file names."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from campaign.report import (
    MAX_CELL_CHARS,
    Pricing,
    ReportError,
    default_report_path,
    pricing_for,
    quantile,
    safe_text,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101, 1000])
def test_quantile_matches_numpy_linear_interpolation(size: int) -> None:
    rnd = random.Random(size)
    values = sorted(rnd.uniform(0, 5) for _ in range(size))
    for q in (0.0, 0.5, 0.95, 1.0):
        assert quantile(values, q) == pytest.approx(float(np.percentile(values, q * 100)))


def test_quantile_of_nothing_is_none() -> None:
    assert quantile([], 0.5) is None


@pytest.mark.parametrize("text", ["=1+2", "+1", "-1", "@SUM(1)", "\t=1", "\r=1", "+14155550101"])
def test_formula_like_text_is_flagged(text: str) -> None:
    assert safe_text(text) == (text, True)


@pytest.mark.parametrize("text", ["Alice", "1+2", " =1", "a=b", "", "Ünïcode"])
def test_plain_text_is_not_flagged(text: str) -> None:
    assert safe_text(text) == (text, False)


def test_text_is_cut_to_excels_cell_limit() -> None:
    assert len(safe_text("x" * (MAX_CELL_CHARS + 10)).text) == MAX_CELL_CHARS


def test_pricing_defaults_to_zero() -> None:
    assert pricing_for({}) == Pricing()
    assert pricing_for({"pricing": None}) == Pricing()
    assert pricing_for({"pricing": {"stt_per_minute": 0.0043}}).stt_per_minute == 0.0043


@pytest.mark.parametrize(
    ("pricing", "message"),
    [
        ({"stt_per_minute": -1}, "pricing.stt_per_minute must be a number >= 0"),
        ({"stt_per_minute": "cheap"}, "pricing.stt_per_minute must be a number >= 0"),
        ({"tts_per_1k_characters": True}, "pricing.tts_per_1k_characters must be a number"),
        ({"gpu_per_hour": 1}, "unknown price(s) in campaign pricing: gpu_per_hour"),
        ([1, 2], "campaign pricing must be a mapping"),
    ],
)
def test_bad_pricing_is_refused_in_one_line(pricing: object, message: str) -> None:
    with pytest.raises(ReportError) as err:
        pricing_for({"pricing": pricing})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_default_path_uses_the_given_wall_clock() -> None:
    now = datetime(2026, 3, 4, 7, 5, tzinfo=UTC)
    assert default_report_path("spring-promo", now, Path("r")) == Path(
        "r/spring-promo-20260304-0705.xlsx"
    )
    paris = now.astimezone(timezone(timedelta(hours=1)))
    assert default_report_path("spring-promo", paris, Path("r")).name == (
        "spring-promo-20260304-0805.xlsx"
    )


def test_default_path_keeps_odd_names_inside_the_folder() -> None:
    now = datetime(2026, 3, 4, 7, 5, tzinfo=UTC)
    assert default_report_path("../a b/c", now, Path("r")) == Path("r/.._a_b_c-20260304-0705.xlsx")
