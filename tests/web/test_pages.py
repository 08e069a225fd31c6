"""The pages, driven as a browser without JavaScript would: forms, redirects, what is shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.web.conftest import Client, RunningDesk

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "campaigns" / "demo.csv"


def upload(client: Client, url: str, name: str, data: bytes) -> str:
    response = client.post(url, data={"csrf_token": client.csrf}, files={"sheet": (name, data)})
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def test_new_campaign_preview_errors_and_create(desk: RunningDesk) -> None:
    olga = desk.client("olga")
    empty = olga.get("/")
    assert "No campaigns yet" in empty.text

    preview_url = upload(olga, "/campaigns/new/upload", "demo.csv", DEMO.read_bytes())
    page = olga.get(preview_url)
    assert page.status_code == 200
    assert "demo.csv" in page.text
    assert re.search(r"<strong class=\"bad\">1 rejected</strong>", page.text), page.text
    assert "unparseable" in page.text or "invalid" in page.text  # the reason of the bad row
    assert "{Plan}: filled" not in page.text  # the default script uses only {name}
    upload_id = re.search(r'name="upload" value="([^"]+)"', page.text)
    assert upload_id

    # A bad field comes back with its one-line error beside it, and nothing is created.
    form = {
        "upload": upload_id.group(1),
        "phone_column": "Phone",
        "name": "spring",
        "calling_hours.start": "25:00",
        "max_concurrent_calls": "0",
        "script.greeting": "Hello {name}, about {Plan} and {Nonsense}",
        "store_transcripts.shown": "1",
        "store_transcripts": "on",
    }
    bad = olga.form("/campaigns/new", form)
    assert bad.status_code == 400
    assert 'data-error-for="calling_hours.start"' in bad.text
    assert 'data-error-for="max_concurrent_calls"' in bad.text
    assert "{Nonsense}: no such column" in bad.text
    assert "{Plan}: filled" in bad.text
    assert olga.get("/api/campaigns").json() == []

    form.update({"calling_hours.start": "09:00", "max_concurrent_calls": "3"})
    created = olga.form("/campaigns/new", form)
    assert created.status_code == 303, created.text
    assert created.headers["location"] == "/campaigns/spring"
    page = olga.get("/campaigns/spring")
    assert "Campaign spring created" in page.text
    assert "No calls yet" in page.text
    status = olga.get("/api/campaigns/spring").json()
    assert status["config"]["max_concurrent_calls"] == 3
    assert status["status"]["contacts"] > 0

    # The same sheet again adds nobody (idempotent), through the add-contacts page.
    again = olga.get(
        upload(olga, "/campaigns/spring/contacts/upload", "demo.csv", DEMO.read_bytes())
    )
    again_id = re.search(r'name="upload" value="([^"]+)"', again.text)
    assert again_id
    imported = olga.form("/campaigns/spring/contacts", {"upload": again_id.group(1)})
    assert imported.status_code == 303
    assert "0 new contact(s)" in olga.get("/campaigns/spring").text


def test_pasted_yaml_creates_a_campaign(desk: RunningDesk) -> None:
    olga = desk.client("olga")
    page = olga.get(upload(olga, "/campaigns/new/upload", "demo.csv", DEMO.read_bytes()))
    upload_id = re.search(r'name="upload" value="([^"]+)"', page.text)
    assert upload_id
    yaml_text = "name: pasted\ncontacts: /etc/passwd\ncalls_per_second: 0.5\n"
    created = olga.form("/campaigns/new", {"upload": upload_id.group(1), "yaml": yaml_text})
    assert created.status_code == 303, created.text
    config = olga.get("/api/campaigns/pasted").json()["config"]
    assert config["calls_per_second"] == 0.5
    assert config["contacts"] == ["desk-uploads"]  # never a path from the paste


def test_cancel_asks_first_and_edit_keeps_errors_beside_fields(desk: RunningDesk) -> None:
    olga = desk.client("olga")
    olga.post("/api/campaigns", json={"name": "spring"}, headers={"X-CSRF-Token": olga.csrf})
    confirm = olga.get("/campaigns/spring/cancel")
    assert "Yes, cancel the campaign" in confirm.text
    assert olga.get("/api/campaigns/spring/status").json()["status"] == "active"
    edit = olga.form("/campaigns/spring/edit", {"calls_per_second": "-1"})
    assert edit.status_code == 400
    assert 'data-error-for="calls_per_second"' in edit.text
    saved = olga.form("/campaigns/spring/edit", {"calls_per_second": "2"})
    assert saved.status_code == 303
    assert olga.get("/api/campaigns/spring").json()["config"]["calls_per_second"] == 2.0
    assert olga.form("/campaigns/spring/cancel").status_code == 303
    assert olga.get("/api/campaigns/spring/status").json()["status"] == "cancelled"


def test_dnc_schedules_doctor_and_charts_pages(desk: RunningDesk) -> None:
    olga = desk.client("olga")
    assert "The list is empty" in olga.get("/dnc").text
    olga.form("/dnc/add", {"numbers": "+1 212 736 0101\n2127360102", "note": "asked"})
    listed = olga.get("/dnc?q=0102")
    assert "+12127360102" in listed.text and "+12127360101" not in listed.text
    upload(olga, "/dnc/upload", "dnc.csv", b"Phone\n+12127360103\n")
    assert "+12127360103" in olga.get("/dnc").text
    olga.form("/dnc/remove", {"number": "+12127360103"})
    assert "+12127360103" not in olga.get("/dnc").text

    olga.post("/api/campaigns", json={"name": "spring"}, headers={"X-CSRF-Token": olga.csrf})
    assert "No schedules" in olga.get("/schedules").text
    olga.form("/schedules", {"campaign": "spring", "cron": "0 19 * * 1-5", "timezone": "UTC"})
    assert "0 19 * * 1-5" in olga.get("/schedules").text

    doctor = olga.get("/doctor")
    assert doctor.status_code == 200
    assert 'class="check' in doctor.text

    for kind in ("outcomes", "hours", "latency"):
        chart = olga.get(f"/campaigns/spring/charts/{kind}.svg")
        assert chart.status_code == 200
        assert chart.headers["content-type"].startswith("image/svg+xml")
        assert chart.text.startswith("<svg")
    assert olga.get("/docs").status_code == 200
