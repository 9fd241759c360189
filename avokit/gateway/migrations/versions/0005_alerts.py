"""Alerts: an account's webhook and thresholds, and the outbox of alerts to deliver.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the account's alert settings and the alert_outbox table."""
    tz = sa.DateTime(timezone=True)
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("alert_url", sa.String(2000), nullable=True))
        batch.add_column(sa.Column("alert_secret_version", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("alert_low_credit_micros", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("alert_cap_percents", sa.JSON, nullable=True))
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False,
                  index=True),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("dedupe", sa.String(200), nullable=True, unique=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", tz, nullable=False),
        sa.Column("lease_owner", sa.String(40), nullable=True),
        sa.Column("lease_until", tz, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("delivered_at", tz, nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
    )
    op.create_index("ix_alert_outbox_due", "alert_outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_alert_outbox_due", "alert_outbox")
    op.drop_table("alert_outbox")
    with op.batch_alter_table("accounts") as batch:
        for column in ("alert_cap_percents", "alert_low_credit_micros", "alert_secret_version",
                       "alert_url"):
            batch.drop_column(column)
