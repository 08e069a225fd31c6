"""Fixtures shared by every kind of test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from campaign.config import get_settings
from tests.pg import create_database, postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Admin URL of a throwaway PostgreSQL server for this test session."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def pg_ledger_url(postgres_url: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return create_database(postgres_url)


@pytest.fixture
def sqlite_ledger_url(tmp_path: Path) -> str:
    """A fresh SQLite ledger file for one test."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger_url(request: pytest.FixtureRequest) -> str:
    """The same test on both ledger backends."""
    return str(
        request.getfixturevalue(f"{'sqlite' if request.param == 'sqlite' else 'pg'}_ledger_url")
    )


@pytest.fixture
def livekit_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """LiveKit credentials the engine requires, for runs that end before any request."""
    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "not-used-by-these-tests")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
