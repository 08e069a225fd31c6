"""Fixtures shared by every kind of test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
def any_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both ledger backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return create_database(request.getfixturevalue("postgres_url"))
