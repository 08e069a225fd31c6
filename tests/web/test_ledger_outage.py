"""The desk while PostgreSQL drops its connections or refuses new ones (a restart, a failover)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from campaign.store import users as user_store
from campaign.web.security import LEDGER_DOWN
from tests.pg import drop_connections, refused
from tests.web.conftest import PASSWORD, RunningDesk, start_desk

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def pg_desk(pg_ledger_url: str, tmp_path: Path) -> Iterator[RunningDesk]:
    for running in start_desk(pg_ledger_url, tmp_path):
        user_store.add_user(running.ledger, "olga", PASSWORD, user_store.Role.OPERATOR)
        yield running


def test_a_dropped_connection_costs_no_request_and_an_outage_is_a_clear_503(
    pg_desk: RunningDesk, postgres_url: str, pg_ledger_url: str
) -> None:
    database = make_url(pg_ledger_url).database
    assert database
    olga = pg_desk.client("olga")
    assert olga.get("/").status_code == 200
    api = olga.get("/api/campaigns")
    assert api.status_code == 200

    # Every pooled connection killed by the server, the next request a moment later (the
    # pool pings only connections idle for a second): it is served all the same.
    drop_connections(postgres_url, database)
    assert olga.get("/api/campaigns").json() == api.json()
    drop_connections(postgres_url, database)
    assert olga.get("/").status_code == 200

    # The server refuses the database: a 503 that says so, for the API and for a browser.
    with refused(postgres_url, database):
        answer = olga.get("/api/campaigns")
        assert answer.status_code == 503
        assert answer.json() == {"detail": LEDGER_DOWN}
        assert answer.headers["Retry-After"]
        page = olga.get("/")
        assert page.status_code == 503 and LEDGER_DOWN in page.text
        assert page.headers["x-frame-options"] == "DENY"
    # Back by itself, same session.
    assert olga.get("/api/campaigns").json() == api.json()
