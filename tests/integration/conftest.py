"""Fixtures for ledger integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    """The ledger under test: a fresh SQLite file (parametrise for PostgreSQL later)."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"
