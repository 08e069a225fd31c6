"""answering-machine detection timings on the call record

The verdict, the end of the beep and the start of the voicemail message, in seconds
after the answer. Existing records keep NULL (not measured); their `amd_result`
"machine" still maps to the voicemail outcome, so nothing needs a backfill.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = ("amd_latency", "beep_latency", "message_latency")


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("calls", sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
