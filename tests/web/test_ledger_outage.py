"""The desk while PostgreSQL drops its connections or refuses new ones (a restart, a failover)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from campaign.store import users as user_store
from campaign.web.security import LEDGER_DOWN
from tests.web.conftest import PASSWORD, RunningDesk, start_desk

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def pg_desk(pg_ledger_url: str, tmp_path: Path) -> Iterator[RunningDesk]:
    for running in start_desk(pg_ledger_url, tmp_path):
        user_store.add_user(running.ledger, "olga", PASSWORD, user_store.Role.OPERATOR)
        yield running


def admin(postgres_url: str, sql: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.encode())


def drop_connections(postgres_url: str, database: str) -> None:
    admin(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND pid <> pg_backend_pid()",
    )


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
    admin(postgres_url, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        drop_connections(postgres_url, database)
        refused = olga.get("/api/campaigns")
        assert refused.status_code == 503
        assert refused.json() == {"detail": LEDGER_DOWN}
        assert refused.headers["Retry-After"]
        page = olga.get("/")
        assert page.status_code == 503 and LEDGER_DOWN in page.text
        assert page.headers["x-frame-options"] == "DENY"
    finally:
        admin(postgres_url, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    # Back by itself, same session.
    assert olga.get("/api/campaigns").json() == api.json()
