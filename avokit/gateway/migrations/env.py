"""Alembic environment: runs the gateway's migrations against ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context

from avokit.gateway.db.models import Base
from avokit.gateway.db.session import make_db_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Apply migrations in one transaction on the configured database."""
    engine = make_db_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
