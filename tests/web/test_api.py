"""The HTTP API against the real app and a real ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.store import users as user_store
from tests.web.conftest import RunningDesk

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "campaigns" / "demo.csv"
CAMPAIGN = {
    "name": "spring",
    "region": "US",
    "time_zone": "America/New_York",
    "calling_hours": {"start": "09:00", "end": "20:00", "days": "mon-fri"},
    "max_concurrent_calls": 2,
    "script": {"greeting": "Hello {name}, about your {Plan} plan."},
}


def bearer(desk: RunningDesk, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_store.create_token(desk.ledger, user, 'test')}"}


def test_health_needs_no_sign_in(desk: RunningDesk) -> None:
    response = desk.client().get("/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "ledger": "ok"}


def test_create_import_and_read_a_campaign(desk: RunningDesk) -> None:
    api = desk.client()
    auth = bearer(desk, "olga")
    created = api.post("/api/campaigns", json=CAMPAIGN, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["config"]["max_concurrent_calls"] == 2

    with DEMO.open("rb") as sheet:
        imported = api.post(
            "/api/campaigns/spring/contacts", files={"sheet": ("demo.csv", sheet)}, headers=auth
        )
    assert imported.status_code == 200, imported.text
    body = imported.json()
    assert body["new"] > 0
    assert body["source"] == "upload:demo.csv"
    assert {r["reason"] for r in body["rejections"]} <= {
        "empty",
        "unparseable",
        "invalid",
        "not_dialable_type",
        "do_not_call",
        "duplicate",
    }
    # idempotent, as `dialer import`
    with DEMO.open("rb") as sheet:
        again = api.post(
            "/api/campaigns/spring/contacts", files={"sheet": ("demo.csv", sheet)}, headers=auth
        ).json()
    assert again["new"] == 0
    assert again["already_present"] == body["new"]

    rows = api.post(
        "/api/campaigns/spring/contacts",
        json={
            "rows": [
                {"Name": "Crm Person", "Phone": "+1 212 736 0199"},
                {"Name": "X", "Phone": "12"},
            ],
            "source": "crm",
        },
        headers=auth,
    ).json()
    assert rows["new"] == 1
    assert [r["row"] for r in rows["rejections"]] == [3]

    status = api.get("/api/campaigns/spring/status", headers=auth).json()
    assert status["contacts"] == body["new"] + 1
    assert status["status"] == "active"
    listed = api.get("/api/campaigns", headers=auth).json()
    assert [c["name"] for c in listed] == ["spring"]


def test_yaml_body_and_field_errors(desk: RunningDesk) -> None:
    api = desk.client()
    auth = {**bearer(desk, "olga"), "Content-Type": "application/yaml"}
    good = api.post("/api/campaigns", data="name: night\ncalls_per_second: 2\n", headers=auth)
    assert good.status_code == 201, good.text
    bad = api.post(
        "/api/campaigns",
        data="name: bad\ncalling_hours: {start: '25:00'}\nmax_concurrent_calls: 0\n",
        headers=auth,
    )
    assert bad.status_code == 400
    fields = bad.json()["detail"]["fields"]
    assert "calling_hours.start" in fields
    assert "max_concurrent_calls" in fields
    duplicate = api.post("/api/campaigns", data="name: night\n", headers=auth)
    assert duplicate.status_code == 409


def test_start_pause_resume_cancel_and_attempts(desk: RunningDesk) -> None:
    api = desk.client()
    auth = bearer(desk, "olga")
    api.post("/api/campaigns", json=CAMPAIGN, headers=auth)
    empty = api.post("/api/campaigns/spring/start", headers=auth)
    assert empty.status_code == 409  # nobody to call yet
    with DEMO.open("rb") as sheet:
        api.post(
            "/api/campaigns/spring/contacts", files={"sheet": ("demo.csv", sheet)}, headers=auth
        )
    started = api.post("/api/campaigns/spring/start", headers=auth)
    assert started.status_code == 202, started.text
    assert started.json()["new"] is True
    again = api.post("/api/campaigns/spring/start", headers=auth).json()
    assert again == {**started.json(), "new": False}
    assert api.post("/api/campaigns/spring/pause", headers=auth).json()["status"] == "paused"
    assert api.post("/api/campaigns/spring/resume", headers=auth).json()["status"] == "active"
    assert api.post("/api/campaigns/spring/cancel", headers=auth).json()["status"] == "cancelled"
    attempts = api.get("/api/campaigns/spring/attempts?page=1&per_page=10", headers=auth).json()
    assert attempts == {"total": 0, "page": 1, "per_page": 10, "attempts": []}
    assert api.get("/api/campaigns/nope/status", headers=auth).status_code == 404


def test_workbook_download(desk: RunningDesk) -> None:
    api = desk.client()
    auth = bearer(desk, "victor")
    api.post("/api/campaigns", json=CAMPAIGN, headers=bearer(desk, "olga"))
    response = api.get("/api/campaigns/spring/workbook", headers=auth)
    assert response.status_code == 200
    assert response.content[:2] == b"PK"
    assert "spring-" in response.headers["content-disposition"]


def test_dnc_and_schedules(desk: RunningDesk) -> None:
    api = desk.client()
    auth = bearer(desk, "olga")
    added = api.post("/api/dnc", json={"numbers": ["+1 212 736 0101", "2127360102"]}, headers=auth)
    assert added.json() == {"added": 2, "already_listed": 0}
    bad = api.post("/api/dnc", json={"numbers": ["123"]}, headers=auth)
    assert bad.status_code == 400
    found = api.get("/api/dnc?q=0101", headers=auth).json()
    assert [e["e164"] for e in found["entries"]] == ["+12127360101"]
    assert api.delete("/api/dnc/+12127360101", headers=auth).json() == {"removed": 1}

    api.post("/api/campaigns", json=CAMPAIGN, headers=auth)
    schedule = api.post(
        "/api/schedules",
        json={"campaign": "spring", "cron": "0 19 * * 1-5", "timezone": "America/New_York"},
        headers=auth,
    )
    assert schedule.status_code == 201, schedule.text
    assert schedule.json()["next_run"]
    assert len(api.get("/api/schedules", headers=auth).json()) == 1
    wrong = api.post(
        "/api/schedules",
        json={"campaign": "spring", "cron": "bad", "timezone": "UTC"},
        headers=auth,
    )
    assert wrong.status_code == 400
    assert api.delete(f"/api/schedules/{schedule.json()['id']}", headers=auth).status_code == 200


def test_openapi_lists_the_api(desk: RunningDesk) -> None:
    spec = desk.client().get("/openapi.json", headers=bearer(desk, "victor")).json()
    for path in ("/api/campaigns", "/api/campaigns/{name}/contacts", "/api/dnc", "/api/schedules"):
        assert path in spec["paths"]
