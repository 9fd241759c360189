"""Engines, sessions and migrations for SQLite (default, WAL) and PostgreSQL (replicas).

The request path uses :func:`read_connection` and :func:`write_transaction` (SQLAlchemy Core
on a pooled connection) rather than ORM sessions: fewer statements and no unit of work.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from avokit.gateway.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_db_engine(url: str) -> Engine:
    """A SQLAlchemy engine; SQLite gets WAL and a busy timeout so several processes share it."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ConfigError(f"db_url {url!r} is not a database URL: {err}") from err
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # autocommit off at the driver so BEGIN IMMEDIATE below controls locking
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit is atomic and survives a crash of any process
            # (kill -9 included); only an OS crash or power loss can roll back the last
            # commits (never corrupt the file). FULL would fsync on every commit, which costs
            # more than the whole request. PostgreSQL is the choice for power-loss durability.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            # SQLite's automatic checkpoint (at 1,000 WAL pages, ~55 gateway requests) runs
            # inside the commit that crosses it and fsyncs: ~3 ms on that one request, which
            # was the gateway's whole p99. `avokit serve` checkpoints from a background thread
            # instead (`checkpoint`, every `checkpoint_interval_s`), which also bounds what an
            # OS crash can lose when traffic is light. Under steady load writers never pause,
            # so those checkpoints cannot restart the WAL; the automatic one restarts it at
            # 10,000 pages (40 MB), when most of it is already copied.
            cur.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            if conn.get_execution_options().get(READ_ONLY):
                # one SELECT runs atomically on its own: no BEGIN, and no write lock taken
                return
            # take the write lock up front: no deadlock-prone lock upgrades between processes
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        _SQLITE_WRITE_LOCKS[engine] = threading.Lock()
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


READ_ONLY = "avokit_read_only"
AUTOCHECKPOINT_PAGES = 10_000
# SQLite allows one writer per file. Threads of one process queue on this lock (woken the
# moment it is free) instead of polling SQLite's busy handler, which sleeps 1, 2, 5, 10 ms...
# between retries; other processes still wait through busy_timeout.
_SQLITE_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = (
    weakref.WeakKeyDictionary())


@contextlib.contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection for a single read-only statement (on SQLite: no write lock)."""
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        yield conn


def sqlite_write_lock(engine: Engine) -> threading.Lock | None:
    """The in-process writer lock of a SQLite engine; None for other databases."""
    return _SQLITE_WRITE_LOCKS.get(engine)


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A Core transaction that commits on success and rolls back on error."""
    lock = _SQLITE_WRITE_LOCKS.get(engine)
    if lock is None:
        with engine.begin() as conn:
            yield conn
        return
    with lock, engine.begin() as conn:
        yield conn


def is_sqlite(engine: Engine) -> bool:
    """Whether ``engine`` is a SQLite database (one file, WAL, one writer at a time)."""
    return engine.dialect.name == "sqlite"


def checkpoint(engine: Engine) -> tuple[int, int] | None:
    """Copy committed WAL pages into a SQLite database file and sync it (PASSIVE: waits on no lock).

    Returns ``(WAL pages, pages checkpointed)``; None for other databases, or when another
    connection is checkpointing at that moment (it does the same work).
    """
    if not is_sqlite(engine):
        return None
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        busy, wal_pages, done = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return None if busy else (int(wal_pages), int(done))
    finally:
        conn.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded rows usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def run_migrations(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")
