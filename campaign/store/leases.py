"""Dialer leases: which dialer processes are alive, by heartbeat, on the database's clock.

A dialer takes its lease when it starts, renews it every few seconds and drops it
when it stops. A lease not renewed for its time to live has expired: the dialer is
gone (killed, frozen, cut off), and the others may reconcile its attempts. PIDs are
never consulted: after a container restart the new dialer is PID 1 again, and two
hosts may share a name. Every time here is read from the database (`db_now`), so
hosts with skewed clocks agree on who expired.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from campaign.store.db import Ledger
from campaign.store.models import DialerLease

#: leases that expired this long ago are deleted when a dialer starts
FORGET_AFTER = timedelta(days=1)


def db_now(session: Session) -> datetime:
    """The database server's current time, as an aware UTC datetime."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(text("SELECT clock_timestamp()"))
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    raw = session.scalar(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))
    return datetime.fromisoformat(str(raw)).replace(tzinfo=UTC)


def acquire(ledger: Ledger, dialer_id: str, *, campaign: str, ttl: float) -> datetime:
    """Take this dialer's lease (a new id each process start); returns when it expires."""
    with ledger.session() as session:
        now = db_now(session)
        session.execute(delete(DialerLease).where(DialerLease.expires_at < now - FORGET_AFTER))
        return _put(session, dialer_id, campaign=campaign, state="starting", now=now, ttl=ttl)


def renew(ledger: Ledger, dialer_id: str, *, campaign: str, state: str, ttl: float) -> datetime:
    """Extend the lease by `ttl` from now (re-taking it if it was dropped); returns when
    it expires. `state` is what `dialer status` shows for this dialer."""
    with ledger.session() as session:
        now = db_now(session)
        return _put(session, dialer_id, campaign=campaign, state=state, now=now, ttl=ttl)


def _put(
    session: Session, dialer_id: str, *, campaign: str, state: str, now: datetime, ttl: float
) -> datetime:
    expires = now + timedelta(seconds=ttl)
    done = session.execute(
        update(DialerLease)
        .where(DialerLease.dialer_id == dialer_id)
        .values(heartbeat_at=now, expires_at=expires, state=state[:500])
    )
    if not done.rowcount:  # type: ignore[attr-defined]
        session.add(
            DialerLease(
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
