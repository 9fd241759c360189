"""Operating the API: request ids on reservations, ledger and audit rows; per-key spend caps.

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


def upgrade() -> None:
    """Add request_id columns, the key's spend cap and the key_spend period table."""
    tz = sa.DateTime(timezone=True)
    for table in ("reservations", "ledger", "audit_log"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("request_id", sa.String(128), nullable=True))
    op.create_index("ix_ledger_request_id", "ledger", ["request_id"])
    with op.batch_alter_table("reservations") as batch:
        # the cap period this reservation counts against (None: the key had no cap)
        batch.add_column(sa.Column("cap_period_start", tz, nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("spend_cap_micros", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("spend_cap_period", sa.String(8), nullable=True))
    op.create_table(
        "key_spend",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("period_start", tz, primary_key=True),
        sa.Column("spent_micros", sa.BigInteger, nullable=False),
        sa.Column("reserved_micros", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_table("key_spend")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("spend_cap_period")
        batch.drop_column("spend_cap_micros")
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("cap_period_start")
    op.drop_index("ix_ledger_request_id", "ledger")
    for table in ("audit_log", "ledger", "reservations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("request_id")
