"""Dialer leases: which dialer processes are alive, by heartbeat, on the database's clock.

A dialer takes its lease when it starts, renews it every few seconds and drops it
when it stops. A lease not renewed for its time to live has expired: the dialer is
gone (killed, frozen, cut off), and the others may reconcile its attempts. PIDs are
never consulted: after a container restart the new dialer is PID 1 again, and two
hosts may share a name. Every time here is read from the database (`db_now`, or the
statement's own clock), so hosts with skewed clocks agree on who expired.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Table, bindparam, delete, select, text
from sqlalchemy.orm import Session

from campaign.store.db import Ledger
from campaign.store.models import DialerLease, UTCDateTime, utcnow

#: leases that expired this long ago are deleted when a dialer starts
FORGET_AFTER = timedelta(days=1)


def db_now(conn: Session | Connection) -> datetime:
    """The database server's current time, as an aware UTC datetime.

    SQLite has no server: its `'now'` is read from this process's own clock, so that
    clock is asked directly, without a statement.
    """
    dialect = conn.get_bind().dialect if isinstance(conn, Session) else conn.dialect
    if dialect.name != "postgresql":
        return utcnow()
    value = conn.scalar(text("SELECT clock_timestamp()"))
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def acquire(ledger: Ledger, dialer_id: str, *, campaign: str, ttl: float) -> datetime:
    """Take this dialer's lease (a new id each process start); returns when it expires."""
    with ledger.transaction() as conn:
        now = db_now(conn)
        conn.execute(delete(DialerLease).where(DialerLease.expires_at < now - FORGET_AFTER))
        return _put(conn, dialer_id, campaign=campaign, state="starting", now=now, ttl=ttl)


#: a renewal in one statement, its time the server's (PostgreSQL) or this process's
_RENEW_PG = text(
    "UPDATE dialer_leases SET heartbeat_at = statement_timestamp(),"
    " expires_at = statement_timestamp() + :ttl * interval '1 second', state = :state"
    " WHERE dialer_id = :dialer RETURNING expires_at"
).columns(expires_at=UTCDateTime())
_RENEW_SQLITE = (
    text(
        "UPDATE dialer_leases SET heartbeat_at = :now, expires_at = :expires, state = :state"
        " WHERE dialer_id = :dialer RETURNING expires_at"
    )
    .bindparams(bindparam("now", type_=UTCDateTime()), bindparam("expires", type_=UTCDateTime()))
    .columns(expires_at=UTCDateTime())
)


def renew(ledger: Ledger, dialer_id: str, *, campaign: str, state: str, ttl: float) -> datetime:
    """Extend the lease by `ttl` from now (re-taking it if it was dropped); returns when
    it expires. `state` is what `dialer status` shows for this dialer.

    One statement (a heartbeat every few seconds is the engine's most frequent write),
    its time folded in; only a lease that was dropped takes more, to re-take it.
    """
    params: dict[str, object] = {"dialer": dialer_id, "state": state[:500], "ttl": ttl}
    with ledger.transaction() as conn:
        if ledger.is_postgres:
            expires = conn.scalar(_RENEW_PG, params)
        else:
            now = utcnow()
            params.update(now=now, expires=now + timedelta(seconds=ttl))
            expires = conn.scalar(_RENEW_SQLITE, params)
        if expires is None:  # dropped (or never taken): take it again
            return _put(conn, dialer_id, campaign=campaign, state=state, now=db_now(conn), ttl=ttl)
        assert isinstance(expires, datetime)
        return expires


def _put(
    conn: Connection, dialer_id: str, *, campaign: str, state: str, now: datetime, ttl: float
) -> datetime:
    expires = now + timedelta(seconds=ttl)
    table = cast(Table, DialerLease.__table__)
    done = conn.execute(
        table.update()
        .where(table.c.dialer_id == dialer_id)
        .values(heartbeat_at=now, expires_at=expires, state=state[:500])
    )
    if not done.rowcount:
        conn.execute(
            table.insert().values(
                dialer_id=dialer_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                campaign=campaign,
                state=state[:500],
                started_at=now,
                heartbeat_at=now,
                expires_at=expires,
            )
        )
    return expires


def release(ledger: Ledger, dialer_id: str) -> None:
    """The dialer stopped cleanly: its lease goes (its attempts are all finalised)."""
    with ledger.session() as session:
        session.execute(delete(DialerLease).where(DialerLease.dialer_id == dialer_id))


def dialer_states(ledger: Ledger, campaign: str) -> list[str]:
    """`dialer_id: state` of each live dialer of the campaign, for `dialer status`."""
    with ledger.session() as session:
        now = db_now(session)
        rows = session.execute(
            select(DialerLease.dialer_id, DialerLease.state)
            .where(DialerLease.campaign == campaign, DialerLease.expires_at > now)
            .order_by(DialerLease.started_at)
        ).all()
        return [f"{dialer_id}: {state}" for dialer_id, state in rows]
