"""Who is asking, and may they: sessions, API tokens, CSRF, upload size, response headers.

Two ASGI middlewares wrap every route, so a new route cannot forget them:
`SizeLimit` answers 413 for a body over the limit (declared or streamed), and
`Gate` resolves the caller (an `Authorization: Bearer` API token or the session
cookie) and refuses anonymous requests to anything but the sign-in page, the
health check and the static files. Roles and the CSRF token are checked by the
`require_*` dependencies; the CSRF check is applied to the whole application.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread
from fastapi import HTTPException, Request
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from campaign.store import Ledger
from campaign.store import users as user_store
from campaign.store.users import Principal

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "desk_session"
#: the sign-in form's CSRF token (double submit: cookie and form field must match)
LOGIN_CSRF_COOKIE = "desk_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: paths anyone may reach
PUBLIC_PATHS = frozenset({"/login", "/health"})
PUBLIC_PREFIXES = ("/static/",)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: what a caller is told while the ledger cannot be reached (503, with Retry-After)
LEDGER_DOWN = "the ledger cannot be reached right now: try again in a moment"
LEDGER_RETRY_AFTER_S = 5

_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    # No inline script, no third-party anything: what a sheet or a transcript holds
    # cannot run even if an escaping bug let it through.
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        b" frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
]


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def wants_json(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    return str(scope.get("path", "")).startswith("/api/") or (
        "application/json" in headers.get("accept", "")
        and "text/html" not in headers.get("accept", "")
    )


class SizeLimit:
    """413 for a request body over `max_bytes`, whether declared up front or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        mb = self.max_bytes / 1_000_000
        message = f"the upload is larger than the limit of {mb:g} MB (DESK_MAX_UPLOAD_MB)"
        response: Response = (
            JSONResponse({"detail": message}, status_code=413)
            if wants_json(scope)
            else PlainTextResponse(message, status_code=413)
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class Gate:
    """Resolve the caller into `scope["state"]["principal"]`; refuse anonymous requests."""

    def __init__(self, app: ASGIApp, ledger: Ledger) -> None:
        self.app = app
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + _HEADERS
            await send(message)

        # The lookup is a ledger query: off the event loop. A pooled connection that the
        # server dropped (a restart, a failover) fails once and is replaced: ask again.
        for last_try in (False, True):
            try:
                principal = await anyio.to_thread.run_sync(self.identify, scope)
                break
            except DBAPIError as exc:
                if last_try or not exc.connection_invalidated:
                    log_ledger_fault(exc)
                    await ledger_down_response(scope)(scope, receive, with_headers)
                    return
        scope.setdefault("state", {})["principal"] = principal
        path = str(scope.get("path", ""))

        if principal is None and not is_public(path):
            response: Response
            headers = Headers(scope=scope)
            navigation = "text/html" in headers.get("accept", "")
            if wants_json(scope) or headers.get("authorization") or not navigation:
                response = JSONResponse(
                    {"detail": "sign in first: a session cookie or an Authorization: Bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            else:
                response = RedirectResponse("/login", status_code=303)
            await response(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)

    def identify(self, scope: Scope) -> Principal | None:
        headers = Headers(scope=scope)
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return user_store.token_principal(self.ledger, token.strip())
        cookie = _cookie(headers, SESSION_COOKIE)
        return user_store.session_principal(self.ledger, cookie) if cookie else None


def log_ledger_fault(exc: DBAPIError) -> None:
    # the driver's first line only: never the statement or its parameters
    logger.warning("the ledger refused a desk request: %s", str(exc.orig).split("\n", 1)[0])


def ledger_down_response(scope: Scope) -> Response:
    """503 while the ledger cannot be reached: JSON for the API, a line for a browser."""
    headers = {"Retry-After": str(LEDGER_RETRY_AFTER_S)}
    if wants_json(scope):
        return JSONResponse({"detail": LEDGER_DOWN}, status_code=503, headers=headers)
    return PlainTextResponse(LEDGER_DOWN, status_code=503, headers=headers)


def _cookie(headers: Headers, name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


def principal_of(request: Request) -> Principal:
    """The signed-in user (the gate has refused anonymous requests already)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise HTTPException(401, "sign in first")
    return principal


def require_user(request: Request) -> Principal:
    return principal_of(request)


def require_operator(request: Request) -> Principal:
    """Anything that starts, stops, calls or changes: operators only."""
    principal = principal_of(request)
    if not principal.can_change:
        raise HTTPException(403, f"{principal.name} is a viewer: viewers cannot change anything")
    return principal


async def check_csrf(request: Request) -> None:
    """Every unsafe request of a browser session carries the session's CSRF token.

    API-token requests carry no cookie, so a forged cross-site request cannot use one;
    the sign-in form checks its own double-submit token.
    """
    if request.method not in UNSAFE_METHODS:
        return
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None or principal.csrf_token is None:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()  # parsed once: the route reads the same form
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not secrets.compare_digest(sent, principal.csrf_token):
        raise HTTPException(
            403, "the form is missing its CSRF token or it is stale; reload the page"
        )


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def login_token_matches(request: Request, sent: str | None) -> bool:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(cookie and sent and secrets.compare_digest(cookie, sent))
