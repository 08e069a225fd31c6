"""The desk: web pages and the HTTP API (FastAPI) on the same ledger and engine as the CLI.

`create_app` builds the application; `dialer serve` runs it on uvicorn beside the
runner (`campaign.scheduler`). Nothing here decides anything about campaigns: routes
parse, call the same functions as the CLI, and render.
"""

from __future__ import annotations

from campaign.web.actions import Desk
from campaign.web.app import create_app

__all__ = ["Desk", "create_app"]
