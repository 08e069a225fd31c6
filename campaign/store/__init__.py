"""The ledger: the only package in the dialer that writes SQL.

Modules: `models` (tables), `db` (connection and migrations); query modules
sit beside them, one per concern.
"""

from __future__ import annotations

from campaign.store.db import Ledger, LedgerError, open_ledger
from campaign.store.models import (
    Attempt,
    Base,
    CallRecord,
    Campaign,
    Contact,
    DialerLease,
    DncEntry,
    Rejection,
    Turn,
    ZoneSet,
    utcnow,
)

__all__ = [
    "Attempt",
    "Base",
    "CallRecord",
    "Campaign",
    "Contact",
    "DialerLease",
    "DncEntry",
    "Ledger",
    "LedgerError",
    "Rejection",
    "Turn",
    "ZoneSet",
    "open_ledger",
    "utcnow",
]
