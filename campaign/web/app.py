"""The desk's FastAPI application: security layers, the API, the pages, the health check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from campaign.config import Settings
from campaign.scheduler import CampaignScheduler
from campaign.store import Ledger
from campaign.store.aio import is_transient_ledger_fault
from campaign.web import api, pages
from campaign.web.actions import Desk
from campaign.web.security import (
    LEDGER_DOWN,
    LEDGER_RETRY_AFTER_S,
    Gate,
    SizeLimit,
    check_csrf,
    log_ledger_fault,
    wants_json,
)

STATIC = Path(__file__).resolve().parent / "static"


def create_app(ledger: Ledger, settings: Settings, scheduler: CampaignScheduler) -> FastAPI:
    """The desk on this ledger. Every route but `/login`, `/health` and `/static` needs a user."""
    desk = Desk(ledger, settings, scheduler)
    app = FastAPI(
        title="Campaign desk",
        summary="Outbound campaigns on LiveKit: create, import, start, watch, download.",
        version="1",
        dependencies=[Depends(check_csrf)],
        # Swagger UI and ReDoc load their scripts from a CDN: the desk renders its own page.
        docs_url=None,
        redoc_url=None,
    )
    app.state.desk = desk
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", tags=["health"], summary="Up, and the ledger answers (no sign-in)")
    def health() -> JSONResponse:
        try:
            with ledger.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            return JSONResponse({"ok": False, "ledger": "unreachable"}, status_code=503)
        return JSONResponse({"ok": True, "ledger": "ok"})

    @app.get("/docs", include_in_schema=False)
    def api_docs(request: Request) -> Any:
        return pages.render(request, "api_docs.html", spec=app.openapi())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        if wants_json(request.scope):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        return pages.error_page(request, exc.status_code, exc.detail)

    @app.exception_handler(DBAPIError)
    async def ledger_error(request: Request, exc: DBAPIError) -> Any:
        if not is_transient_ledger_fault(exc):
            raise exc  # a bug, not an outage: a 500 with its traceback in the log
        log_ledger_fault(exc)
        retry = {"Retry-After": str(LEDGER_RETRY_AFTER_S)}
        if wants_json(request.scope):
            return JSONResponse({"detail": LEDGER_DOWN}, status_code=503, headers=retry)
        page = pages.error_page(request, 503, LEDGER_DOWN)
        page.headers.update(retry)
        return page

    # Outermost first: the size limit sees the raw body before anything parses it.
    app.add_middleware(Gate, ledger=ledger)
    app.add_middleware(SizeLimit, max_bytes=desk.max_upload_bytes)
    return app
