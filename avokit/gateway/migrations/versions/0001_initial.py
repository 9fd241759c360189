"""Initial gateway schema: accounts, api_keys, reservations, ledger, audit_log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table."""
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("credit_micros", sa.BigInteger, nullable=False),
        sa.Column("reserved_micros", sa.BigInteger, nullable=False),
        sa.Column("created_at", tz, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("allowed_models", sa.JSON, nullable=False),
        sa.Column("prices", sa.JSON, nullable=False),
        sa.Column("rpm", sa.Integer, nullable=False),
        sa.Column("tpm", sa.Integer, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("expires_at", tz, nullable=True),
        sa.Column("revoked_at", tz, nullable=True),
        sa.Column("rotated_to", sa.String(32), nullable=True),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"])
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger, nullable=False),
        sa.Column("price_in", sa.BigInteger, nullable=False),
        sa.Column("price_out", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("delivered_tokens", sa.Integer, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("updated_at", tz, nullable=False),
    )
    op.create_index("ix_reservations_account_id", "reservations", ["account_id"])
    op.create_index("ix_reservations_key_id", "reservations", ["key_id"])
    op.create_index("ix_reservations_status", "reservations", ["status"])
    op.create_index("ix_reservations_updated_at", "reservations", ["updated_at"])
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("reservation_id", sa.String(40), nullable=True, unique=True),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("created_at", tz, nullable=False),
    )
    op.create_index("ix_ledger_account_id", "ledger", ["account_id"])
    op.create_index("ix_ledger_key_id", "ledger", ["key_id"])
    op.create_index("ix_ledger_created_at", "ledger", ["created_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", tz, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
    )


def downgrade() -> None:
    """Drop every table."""
    for table in ("audit_log", "ledger", "reservations", "api_keys", "accounts"):
        op.drop_table(table)
