"""dialer leases: heartbeat rows that say which dialer processes are alive

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:15:00

No backfill: attempts left in flight by dialers of an older version have no lease,
so the first dialer of this version reconciles them at once (stop older dialers
before migrating).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campaign.store.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dialer_leases",
        sa.Column("dialer_id", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("campaign", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=500), nullable=False),
        sa.Column("started_at", campaign.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", campaign.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", campaign.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dialer_id", name=op.f("pk_dialer_leases")),
    )
    with op.batch_alter_table("dialer_leases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dialer_leases_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dialer_leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dialer_leases_expires_at"))
    op.drop_table("dialer_leases")
