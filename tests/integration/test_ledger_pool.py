"""The PostgreSQL pool pings a connection only once it sat idle (`PING_IF_IDLE` in
`campaign/store/db.py`): one the server closed meanwhile is replaced before use, and one
closed in the short gap after its last use fails as a transient fault, which the
engine's retry policy (`store.aio`) takes."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from campaign.store import db, open_ledger
from campaign.store.aio import AsyncLedger, LedgerRetry
from campaign.store.db import Ledger

pytestmark = pytest.mark.integration


def _backend(ledger: Ledger) -> int:
    with ledger.transaction() as conn:
        pid = conn.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


def _terminate(ledger: Ledger, pid: int) -> None:
    url = make_url(ledger.url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_an_idle_connection_the_server_closed_is_replaced(
    pg_ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(pg_ledger_url)
    try:
        first = _backend(ledger)
        _terminate(ledger, first)
        monkeypatch.setattr(db, "PING_IF_IDLE", 0.0)  # as if it sat idle
        assert _backend(ledger) != first  # no error: pinged, replaced
    finally:
        ledger.dispose()


def test_a_connection_closed_right_after_use_is_a_transient_fault(
    pg_ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(pg_ledger_url)
    try:
        monkeypatch.setattr(db, "PING_IF_IDLE", 3600.0)  # never pinged
        first = _backend(ledger)
        _terminate(ledger, first)
        retry = LedgerRetry(attempts=3, initial_wait=0.01, max_wait=0.05)
        again = asyncio.run(AsyncLedger(ledger, retry=retry)(_backend))
        assert again != first
    finally:
        ledger.dispose()
