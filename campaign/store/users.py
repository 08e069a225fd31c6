"""Who may use the desk: users, API tokens, sign-in sessions and the login rate limit.

Passwords are kept as argon2id hashes; API tokens and session ids are random
secrets of which only the SHA-256 is stored (they carry 256 bits, so a fast hash
is enough, and a lookup is one indexed equality). Everything lives in the ledger,
so every `dialer serve` replica honours every session and counts every failure.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from campaign.errors import UserError
from campaign.store.db import Ledger
from campaign.store.models import ApiToken, DeskSession, LoginFailure, User, utcnow

#: what a token looks like: a prefix to recognise it in a leak scan, then 43 url-safe chars
TOKEN_PREFIX = "dsk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
_MIN_PASSWORD = 8
_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown name as slow as one for a known name.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    """What a user may do."""

    OPERATOR = "operator"  #: everything: create, import, start, pause, cancel, call, DNC
    VIEWER = "viewer"  #: read only: pages, status, attempts, workbooks


class AccountError(UserError):
    """A user or token cannot be created or found; the message is one line."""


@dataclass(frozen=True)
class Principal:
    """The signed-in user of one request."""

    user_id: int
    name: str
    role: Role
    #: the session's CSRF token; None for API-token requests (no cookie, no CSRF)
    csrf_token: str | None = None

    @property
    def can_change(self) -> bool:
        return self.role is Role.OPERATOR


@dataclass(frozen=True)
class NewSession:
    """A session just opened: the cookie value is only here, never stored."""

    cookie: str
    principal: Principal
    expires_at: datetime


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_user(ledger: Ledger, name: str, password: str, role: Role | str) -> int:
    """Create a user; the password is hashed here and never stored."""
    if role not in tuple(Role):
        raise AccountError(f"role {role!r}: use {' or '.join(Role)}")
    if not _NAME.match(name):
        raise AccountError(
            f"user name {name!r}: use letters, digits and _.@- (at most 100, starting with one"
            " letter or digit)"
        )
    if len(password) < _MIN_PASSWORD:
        raise AccountError(f"the password must have at least {_MIN_PASSWORD} characters")
    try:
        with ledger.session() as s:
            user = User(name=name, password_hash=_hasher.hash(password), role=Role(role).value)
            s.add(user)
            s.flush()
            return user.id
    except IntegrityError:
        raise AccountError(f"a user named {name!r} already exists") from None


def set_password(ledger: Ledger, name: str, password: str) -> None:
    if len(password) < _MIN_PASSWORD:
        raise AccountError(f"the password must have at least {_MIN_PASSWORD} characters")
    with ledger.session() as s:
        changed = s.execute(
            update(User).where(User.name == name).values(password_hash=_hasher.hash(password))
        ).rowcount  # type: ignore[attr-defined]
    if not changed:
        raise AccountError(f"no user named {name!r}")


def list_users(ledger: Ledger) -> list[tuple[str, Role, datetime]]:
    with ledger.session() as s:
        rows = s.execute(select(User.name, User.role, User.created_at).order_by(User.name))
        return [(name, Role(role), created) for name, role, created in rows]


def user_count(ledger: Ledger) -> int:
    with ledger.session() as s:
        return s.scalar(select(func.count()).select_from(User)) or 0


# --------------------------------------------------------------------------- sign-in


def recent_failures(ledger: Ledger, name: str, window: timedelta) -> int:
    """Failed sign-ins for `name` within the last `window` (every replica's)."""
    since = utcnow() - window
    with ledger.session() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(LoginFailure)
                .where(LoginFailure.name == name.casefold(), LoginFailure.at >= since)
            )
            or 0
        )


def check_password(
    ledger: Ledger, name: str, password: str, *, also_count: str | None = None
) -> Principal | None:
    """The user when the password matches; otherwise the failure is recorded and None.

    The failure counts against the name and, when given, a second key (the caller's
    address, `ip:ADDR`), so that guessing one password across many names is limited too.
    """
    with ledger.session() as s:
        user = s.scalar(select(User).where(User.name == name))
        snapshot = (user.id, user.name, user.role, user.password_hash) if user else None
    ok = False
    try:
        ok = _hasher.verify(snapshot[3] if snapshot else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        ok = False
    if snapshot is None or not ok:
        with ledger.session() as s:
            s.add(LoginFailure(name=name.casefold()[:100]))
            if also_count:
                s.add(LoginFailure(name=also_count.casefold()[:100]))
            # Old failures no longer count; keep the table small.
            s.execute(delete(LoginFailure).where(LoginFailure.at < utcnow() - timedelta(days=1)))
        return None
    if _hasher.check_needs_rehash(snapshot[3]):
        with ledger.session() as s:
            s.execute(
                update(User)
                .where(User.id == snapshot[0])
                .values(password_hash=_hasher.hash(password))
            )
    return Principal(snapshot[0], snapshot[1], Role(snapshot[2]))


def open_session(ledger: Ledger, principal: Principal, ttl: timedelta) -> NewSession:
    """A new sign-in session; the cookie value is returned once and only its hash is kept."""
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    with ledger.session() as s:
        s.add(
            DeskSession(
                id_hash=_digest(cookie),
                user_id=principal.user_id,
                csrf_token=csrf,
                created_at=now,
                expires_at=now + ttl,
            )
        )
        s.execute(delete(DeskSession).where(DeskSession.expires_at < now))
    signed_in = Principal(principal.user_id, principal.name, principal.role, csrf)
    return NewSession(cookie, signed_in, now + ttl)


def session_principal(ledger: Ledger, cookie: str) -> Principal | None:
    """The user of a live session cookie, or None (unknown or expired)."""
    with ledger.session() as s:
        row = s.execute(
            select(User.id, User.name, User.role, DeskSession.csrf_token)
            .join(DeskSession, DeskSession.user_id == User.id)
            .where(DeskSession.id_hash == _digest(cookie), DeskSession.expires_at > utcnow())
        ).one_or_none()
    if row is None:
        return None
    return Principal(row[0], row[1], Role(row[2]), row[3])


def close_session(ledger: Ledger, cookie: str) -> None:
    with ledger.session() as s:
        s.execute(delete(DeskSession).where(DeskSession.id_hash == _digest(cookie)))


# --------------------------------------------------------------------------- API tokens


def create_token(ledger: Ledger, user_name: str, label: str = "") -> str:
    """A new API token for a user, with the user's role. Returned once; only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with ledger.session() as s:
        user_id = s.scalar(select(User.id).where(User.name == user_name))
        if user_id is None:
            raise AccountError(f"no user named {user_name!r} (add one with `dialer user add`)")
        s.add(ApiToken(user_id=user_id, label=label[:100], token_hash=_digest(token)))
    return token


def token_principal(ledger: Ledger, token: str) -> Principal | None:
    """The user an API token belongs to, or None."""
    digest = _digest(token)
    with ledger.session() as s:
        row = s.execute(
            select(User.id, User.name, User.role)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == digest)
        ).one_or_none()
        if row is None:
            return None
        s.execute(
            update(ApiToken).where(ApiToken.token_hash == digest).values(last_used_at=utcnow())
        )
    return Principal(row[0], row[1], Role(row[2]))


def revoke_tokens(ledger: Ledger, user_name: str) -> int:
    """Delete every API token of a user; returns how many there were."""
    with ledger.session() as s:
        user_id = s.scalar(select(User.id).where(User.name == user_name))
        if user_id is None:
            raise AccountError(f"no user named {user_name!r}")
        return s.execute(delete(ApiToken).where(ApiToken.user_id == user_id)).rowcount  # type: ignore[attr-defined,no-any-return]
