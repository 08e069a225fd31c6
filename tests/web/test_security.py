"""Who may do what: every route refuses strangers, forms need their CSRF token, viewers
only read, sign-ins are rate-limited, uploads are capped, sheet and transcript text is
escaped, secrets are stored hashed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select
from starlette.routing import Mount, Route

from campaign.config import load_settings
from campaign.store import dialing, test_calls, utcnow
from campaign.store.calls import CallSummary, TurnMetrics, write_call_record
from campaign.store.models import ApiToken, DeskSession, User
from campaign.web import create_app
from tests.web.conftest import MAX_UPLOAD_MB, PASSWORD, RunningDesk
from tests.web.test_api import CAMPAIGN, bearer

pytestmark = pytest.mark.integration

XSS = "<script>alert(1)</script>"


def _routes(desk: RunningDesk) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, included routers walked into."""
    app = create_app(desk.ledger, load_settings(), desk.scheduler)
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if hasattr(route, "original_router"):  # an included router (FastAPI >= 0.120)
                walk(route.original_router.routes)
            elif isinstance(route, Mount):
                found.append(("GET", route.path + "/desk.css"))
            elif isinstance(route, APIRoute | Route):
                path = re.sub(r"\{[^}]+\}", "1", route.path)
                found.extend((method, path) for method in sorted(route.methods or {"GET"}))

    walk(list(app.routes))
    return found


def test_every_route_refuses_an_anonymous_request(desk: RunningDesk) -> None:
    anonymous = desk.client()
    routes = _routes(desk)
    assert len(routes) > 40
    public = {
        ("GET", "/login"),
        ("POST", "/login"),
        ("GET", "/health"),
        ("GET", "/static/desk.css"),
    }
    checked = 0
    for method, path in routes:
        if (method, path) in public or method == "HEAD":
            continue
        response = anonymous.request(method, path)
        assert response.status_code in (401, 303), (method, path, response.status_code)
        if response.status_code == 303:
            assert response.headers["location"] == "/login", (method, path)
        assert "campaign" not in response.text.lower() or response.status_code == 401
        checked += 1
    assert checked > 40
    # A wrong token is no better than none.
    wrong = anonymous.get("/api/campaigns", headers={"Authorization": "Bearer dsk_wrong"})
    assert wrong.status_code == 401


def test_a_form_post_without_its_csrf_token_is_refused(desk: RunningDesk) -> None:
    olga = desk.client("olga")
    olga.post("/api/campaigns", json=CAMPAIGN, headers=bearer(desk, "olga"))
    refused = olga.post("/campaigns/spring/pause", data={})
    assert refused.status_code == 403
    forged = olga.post("/campaigns/spring/pause", data={"csrf_token": "x" * 43})
    assert forged.status_code == 403
    # The JSON API with the session cookie needs the header too.
    assert olga.post("/api/campaigns/spring/pause").status_code == 403
    assert desk.client("olga").get("/api/campaigns/spring/status").json()["status"] == "active"
    accepted = olga.form("/campaigns/spring/pause")
    assert accepted.status_code == 303
    assert olga.get("/api/campaigns/spring/status").json()["status"] == "paused"
    header = olga.post("/api/campaigns/spring/resume", headers={"X-CSRF-Token": olga.csrf})
    assert header.status_code == 200
    # The sign-in form has its own token.
    stranger = desk.client()
    stranger.get("/login")
    assert stranger.post("/login", data={"name": "olga", "password": PASSWORD}).status_code == 403


def test_a_viewer_cannot_start_stop_call_or_change(desk: RunningDesk) -> None:
    desk.client().post("/api/campaigns", json=CAMPAIGN, headers=bearer(desk, "olga"))
    token = bearer(desk, "victor")
    viewer = desk.client()
    for path in ("start", "pause", "resume", "cancel"):
        assert viewer.post(f"/api/campaigns/spring/{path}", headers=token).status_code == 403
    call = viewer.post(
        "/api/campaigns/spring/calls", json={"number": "+12127360101"}, headers=token
    )
    assert call.status_code == 403
    assert viewer.put("/api/campaigns/spring", json=CAMPAIGN, headers=token).status_code == 403
    assert (
        viewer.post("/api/dnc", json={"numbers": ["+12127360101"]}, headers=token).status_code
        == 403
    )
    assert viewer.get("/api/campaigns/spring/status", headers=token).status_code == 200

    session = desk.client("victor")
    for path in ("start", "cancel", "call/test"):
        response = session.form(f"/campaigns/spring/{path}", {"number": "+12127360101"})
        assert response.status_code == 403, path
    assert session.get("/campaigns/new").status_code == 403
    page = session.get("/campaigns/spring")
    assert page.status_code == 200
    assert "/campaigns/spring/start" not in page.text  # no buttons for a viewer
    assert desk.client("olga").get("/api/campaigns/spring/status").json()["status"] == "active"


def test_sign_ins_are_rate_limited_per_name(desk: RunningDesk) -> None:
    client = desk.client()
    for _ in range(3):  # DESK_LOGIN_ATTEMPTS=3 in the test desk
        assert client.login("olga", "wrong password").status_code == 401
    assert client.login("olga", PASSWORD).status_code == 429  # even the right one, for now
    assert desk.client().login("victor").status_code == 303  # other names are not locked


def test_guessing_across_many_names_is_rate_limited_per_address(desk: RunningDesk) -> None:
    client = desk.client()
    for i in range(12):  # 4 x DESK_LOGIN_ATTEMPTS, each name under its own limit
        assert client.login(f"guess{i % 6}", "password1").status_code == 401
    assert desk.client().login("victor").status_code == 429  # same address


def test_an_oversized_upload_gets_413(desk: RunningDesk) -> None:
    olga = desk.client("olga")
    big = b"Name,Phone\n" + b"Somebody,+12127360101\n" * int(MAX_UPLOAD_MB * 1_000_000 / 20)
    response = olga.post(
        "/campaigns/new/upload",
        data={"csrf_token": olga.csrf},
        files={"sheet": ("big.csv", big)},
    )
    assert response.status_code == 413
    api = desk.client().post(
        "/api/campaigns/spring/contacts",
        files={"sheet": ("big.csv", big)},
        headers=bearer(desk, "olga"),
    )
    assert api.status_code == 413
    assert "DESK_MAX_UPLOAD_MB" in api.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = desk.client().post(
        "/api/campaigns/spring/contacts",
        data=chunks(),
        headers={**bearer(desk, "olga"), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413


def test_sheet_names_are_labels_never_paths(desk: RunningDesk, tmp_path: object) -> None:
    olga = desk.client("olga")
    response = olga.post(
        "/campaigns/new/upload",
        data={"csrf_token": olga.csrf},
        files={"sheet": ("../../etc/evil.csv", b"Name,Phone\nA,+12127360101\n")},
    )
    assert response.status_code == 303
    page = olga.get(response.headers["location"])
    assert "evil.csv" in page.text
    assert "../" not in page.text.split("<main>")[1].split("</h2>")[0]


def test_sheet_and_transcript_text_is_escaped(desk: RunningDesk) -> None:
    olga = desk.client("olga")
    sheet = f"Name,Phone\n{XSS},+12127360101\nBad,{XSS}\n".encode()
    upload = olga.post(
        "/campaigns/new/upload",
        data={"csrf_token": olga.csrf},
        files={"sheet": (f"{XSS}.csv", sheet)},
    )
    preview = olga.get(upload.headers["location"])
    assert XSS not in preview.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in preview.text
    assert "content-security-policy" in preview.headers

    # An attempt and a call record with that text, written as the engine and the agent do.
    desk.client().post("/api/campaigns", json=CAMPAIGN, headers=bearer(desk, "olga"))
    campaign_id = dialing.campaign_id(desk.ledger, "spring")
    claimed = test_calls.start_test_call(
        desk.ledger,
        campaign_id,
        campaign_name="spring",
        e164="+12127360101",
        raw=XSS,
        extension=None,
        name=XSS,
        variables={},
        timezones=["America/New_York"],
        dialer_id="test",
        now=utcnow(),
    )
    write_call_record(
        desk.ledger,
        CallSummary(
            attempt_id=claimed.attempt_id,
            room_name=claimed.room_name,
            answered_at=datetime.now(UTC),
            ended_at=datetime.now(UTC),
            end_reason="callee_left",
            amd_result="human",
            disposition="interested",
            disposition_note=XSS,
            transcript=[{"role": "callee", "text": XSS}, {"role": "agent", "text": "Hello"}],
            turns=[TurnMetrics(user_text=XSS, agent_text="Hello", total_latency=0.8)],
        ),
    )
    for path in ("/campaigns/spring", f"/campaigns/spring/attempts/{claimed.attempt_id}"):
        page = olga.get(path)
        assert page.status_code == 200, path
        assert XSS not in page.text, path
        assert "&lt;script&gt;" in page.text, path


def test_passwords_tokens_and_sessions_are_stored_hashed(desk: RunningDesk) -> None:
    client = desk.client("olga")
    cookie = client.cookies.get("desk_session")
    token = bearer(desk, "olga")["Authorization"].removeprefix("Bearer ")
    with desk.ledger.session() as s:
        hashes = [u.password_hash for u in s.scalars(select(User))]
        tokens = [t.token_hash for t in s.scalars(select(ApiToken))]
        sessions = [d.id_hash for d in s.scalars(select(DeskSession))]
    assert all(h.startswith("$argon2id$") and PASSWORD not in h for h in hashes)
    assert token not in tokens and len(tokens) == 1
    assert cookie and cookie not in sessions and len(sessions) == 1
    login = desk.client().get("/login")
    assert login.status_code == 200
    set_cookie = client.post("/logout", data={"csrf_token": client.csrf})
    assert set_cookie.status_code == 303
    assert client.get("/api/campaigns").status_code == 401  # the session is gone


def test_session_cookie_flags(desk: RunningDesk) -> None:
    client = desk.client()
    client.get("/login")
    token = client.cookies.get("desk_login_csrf")
    response = client.post(
        "/login", data={"name": "olga", "password": PASSWORD, "login_csrf": token}
    )
    header = response.headers["set-cookie"]
    assert "desk_session=" in header
    assert "HttpOnly" in header
    assert "SameSite=lax" in header or "samesite=lax" in header.lower()
    assert "Secure" not in header  # plain HTTP here; behind an HTTPS proxy it is set
