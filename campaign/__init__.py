"""The campaign dialer: contact sheets, the ledger, the dialing engine, reports."""

from __future__ import annotations

__version__ = "0.1.0"
