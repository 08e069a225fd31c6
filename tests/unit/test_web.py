"""The desk's pure parts: the campaign form, sheet labels and placeholders, the charts."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from campaign.web import charts, forms, sheets

pytestmark = pytest.mark.unit


def test_form_fields_become_the_mapping_of_a_campaign_file() -> None:
    form = {
        "name": "spring",
        "calling_hours.start": "09:00",
        "calling_hours.days": "mon-fri",
        "calling_hours.override_legal_limits.shown": "1",
        "retry.busy.delay": "15m",
        "retry.busy.backoff": "2",
        "retry.voicemail.delay": "never",
        "dispositions": "interested, callback ,",
        "pricing.stt_per_minute": "0.01",
        "store_transcripts.shown": "1",  # shown and left unticked: false
        "voicemail_message": "  ",
    }
    data = forms.form_to_mapping(form)
    assert data == {
        "name": "spring",
        "calling_hours": {"start": "09:00", "days": "mon-fri", "override_legal_limits": False},
        "retry": {"busy": {"delay": "15m", "backoff": 2}, "voicemail": "never"},
        "dispositions": ["interested", "callback"],
        "pricing": {"stt_per_minute": 0.01},
        "store_transcripts": False,
    }
    config = forms.validate(data)
    assert config.retry.voicemail == "never"
    assert config.calling_hours.days == "mon-fri"
    assert not config.store_transcripts
    # and back, for the edit page
    values = forms.mapping_to_form(forms.stored(config))
    assert values["retry.voicemail.delay"] == "never"
    assert values["retry.busy.delay"] == "900.0"
    assert values["dispositions"] == "interested, callback"
    assert values["store_transcripts"] == ""


def test_the_models_errors_land_beside_their_fields() -> None:
    with pytest.raises(forms.FormErrors) as caught:
        forms.validate(
            {"name": "bad name!", "calling_hours": {"start": "25:00"}, "calls_per_second": "0",
             "retry": {"busy": {"delay": "soon"}}}
        )  # fmt: skip
    errors = caught.value.errors
    assert set(errors) >= {"name", "calling_hours.start", "calls_per_second", "retry.busy.delay"}
    assert "25:00" in errors["calling_hours.start"]
    assert "\n" not in str(caught.value)
    with pytest.raises(forms.FormErrors) as backoff_only:
        forms.form_to_mapping({"name": "x", "retry.busy.backoff": "2"})
    assert "retry.busy.delay" in backoff_only.value.errors


def test_a_pasted_yaml_is_a_mapping_or_one_line_error() -> None:
    assert forms.parse_yaml("name: x\ncalls_per_second: 2\n") == {
        "name": "x",
        "calls_per_second": 2,
    }
    for text in ("- a\n- b\n", "name: [unclosed\n"):
        with pytest.raises(forms.FormErrors):
            forms.parse_yaml(text)


def test_upload_names_are_labels_without_folders() -> None:
    assert sheets.safe_label("../../etc/passwd") == "passwd"
    assert sheets.safe_label("C:\\Users\\me\\leads.xlsx") == "leads.xlsx"
    assert sheets.safe_label("bad\x00name\n.csv") == "badname.csv"
    assert sheets.safe_label(None) == "upload"
    assert sheets.source_of("leads.csv") == "upload:leads.csv"


def test_uploaded_bytes_are_read_as_a_sheet() -> None:
    sheet = sheets.read_upload(b"Name,Phone\nAda,+12127360101\n", "leads.csv")
    assert sheet.source == "upload:leads.csv"
    assert sheet.headers == ["Name", "Phone"]
    with pytest.raises(sheets.SheetError, match=r"leads\.csv") as caught:
        sheets.read_upload(b"", "leads.csv")
    assert "/tmp" not in str(caught.value)


def test_json_rows_become_a_sheet_with_every_key_as_a_column() -> None:
    sheet = sheets.rows_sheet(
        [{"Phone": "+12127360101"}, {"Phone": 2127360102, "Plan": None}], "crm"
    )
    assert sheet.headers == ["Phone", "Plan"]
    assert sheet.rows == [("+12127360101", ""), ("2127360102", "")]
    assert sheet.row_numbers == [2, 3]


def test_placeholders_against_the_sheets_columns() -> None:
    found = sheets.placeholders(
        ["Hello {name}, your {Plan} plan", None, "{Missing} {Plan}"], ["Plan"]
    )
    assert found.found == ["name", "Plan", "Missing"]
    assert found.missing == ["Missing"]


def test_charts_are_svg_with_escaped_labels_and_empty_states() -> None:
    svg = charts.outcomes_chart(Counter({"answered": 3, "<b>odd</b>": 1}))
    assert svg.startswith("<svg") and "&lt;b&gt;odd&lt;/b&gt;" in svg and "<b>" not in svg
    assert "No attempt has ended yet" in charts.outcomes_chart(Counter())
    noon_utc = datetime(2026, 6, 1, 12, tzinfo=UTC)
    hours = charts.hours_chart([(noon_utc, ["America/New_York"], "answered")], "UTC")
    assert "08h" not in hours or "<rect" in hours
    assert hours.count('fill="#2e7d32"') == 1  # one answered bar, at 08h New York
    latency = charts.latency_chart([0.5, 0.7, 0.9, 1.4])
    assert "4 turns" in latency and "median 0.90 s" in latency
    assert "No turn has been measured yet" in charts.latency_chart([])
