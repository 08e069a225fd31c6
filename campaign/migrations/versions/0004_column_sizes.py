"""column sizes: a sheet's path is as long as the file system allows

`contacts.source` and `rejections.source` were `varchar(500)`: on PostgreSQL one sheet in a
deep folder failed its whole import. Other sizes hold what validation lets through (numbers
of 20 characters, extensions of 20 digits, campaign names of 100).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TABLES = ("contacts", "rejections")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(
                "source",
                existing_type=sa.String(length=500),
                type_=sa.Text(),
                existing_nullable=False,
            )


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(
                "source",
                existing_type=sa.Text(),
                type_=sa.String(length=500),
                existing_nullable=False,
            )
