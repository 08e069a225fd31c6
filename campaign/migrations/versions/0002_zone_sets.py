"""zone sets, due_at and the claim index

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00

Contacts share canonical zone lists (`zone_sets`); each due contact carries `due_at`.
Existing ledgers are backfilled: every contact gets the zone set of its `timezones`,
every due contact (pending or retry, not a test call's) its retry time, or its import
time when it has none.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

import campaign.store.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DUE_AT_SET = "due_at IS NOT NULL OR is_test OR status NOT IN ('pending', 'retry')"


def upgrade() -> None:
    op.create_table(
        "zone_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=1000), nullable=False),
        sa.Column("zones", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zone_sets")),
        sa.UniqueConstraint("key", name=op.f("uq_zone_sets_key")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("zone_set_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("due_at", campaign.store.models.UTCDateTime(timezone=True), nullable=True)
        )
    _backfill()
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.alter_column("zone_set_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(
            op.f("fk_contacts_zone_set_id_zone_sets"), "zone_sets", ["zone_set_id"], ["id"]
        )
        batch_op.create_check_constraint(op.f("ck_contacts_due_at_set"), DUE_AT_SET)
        batch_op.create_index(
            "ix_contacts_claim",
            ["campaign_id", "zone_set_id", "status", "due_at", "id"],
            unique=False,
            sqlite_where=sa.text("due_at IS NOT NULL"),
            postgresql_where=sa.text("due_at IS NOT NULL"),
        )


def _backfill() -> None:
    """One zone set per distinct canonical zone list; one UPDATE per distinct stored list."""
    bind = op.get_bind()
    zone_sets = sa.table(
        "zone_sets", sa.column("id", sa.Integer), sa.column("key"), sa.column("zones", sa.JSON)
    )
    ids: dict[str, int] = {}
    for (text,) in bind.execute(sa.text("SELECT DISTINCT CAST(timezones AS TEXT) FROM contacts")):
        zones = json.loads(text) if text else []
        canonical = sorted({str(z) for z in zones or [] if z})
        key = " ".join(canonical)
        if key not in ids:
            bind.execute(sa.insert(zone_sets).values(key=key, zones=canonical))
            ids[key] = bind.execute(
                sa.select(zone_sets.c.id).where(zone_sets.c.key == key)
            ).scalar_one()
        where = "timezones IS NULL" if text is None else "CAST(timezones AS TEXT) = :text"
        bind.execute(
            sa.text(f"UPDATE contacts SET zone_set_id = :id WHERE {where}"),
            {"id": ids[key], "text": text},
        )
    bind.execute(
        sa.text(
            "UPDATE contacts SET due_at = COALESCE(next_attempt_at, created_at)"
            " WHERE status IN ('pending', 'retry') AND NOT is_test"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_claim")
        batch_op.drop_constraint(op.f("ck_contacts_due_at_set"), type_="check")
        batch_op.drop_constraint(op.f("fk_contacts_zone_set_id_zone_sets"), type_="foreignkey")
        batch_op.drop_column("due_at")
        batch_op.drop_column("zone_set_id")
    op.drop_table("zone_sets")
