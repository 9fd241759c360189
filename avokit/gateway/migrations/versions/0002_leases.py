"""Process leases: each serving process registers itself and owns its reservations.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the instances table and reservations.owner."""
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "instances",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("host", sa.String(300), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("proc_start", sa.String(40), nullable=False),
        sa.Column("started_at", tz, nullable=False),
        sa.Column("heartbeat_at", tz, nullable=False),
    )
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("owner", sa.String(40), nullable=True))
        batch.create_index("ix_reservations_owner", ["owner"])


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("reservations") as batch:
        batch.drop_index("ix_reservations_owner")
        batch.drop_column("owner")
    op.drop_table("instances")
