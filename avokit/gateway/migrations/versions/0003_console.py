"""Web console: administrators, signed-in sessions and each key's display prefix.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the admin_users and console_sessions tables and api_keys.prefix."""
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("disabled_at", tz, nullable=True),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("account_id", sa.Integer, nullable=True),
        sa.Column("admin_id", sa.Integer, nullable=True),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("expires_at", tz, nullable=False),
        sa.Column("ended_at", tz, nullable=True),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("prefix", sa.String(16), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("prefix")
    op.drop_index("ix_console_sessions_expires_at", "console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("admin_users")
