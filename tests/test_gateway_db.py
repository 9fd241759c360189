"""The gateway's database upkeep: WAL checkpoints off the request path, and background jobs
that survive a failure."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from avokit.gateway.app import _every
from avokit.gateway.db.session import (
    AUTOCHECKPOINT_PAGES,
    checkpoint,
    make_db_engine,
    write_transaction,
)


def _write_rows(engine, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        with write_transaction(engine) as conn:
            conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": "x" * 500 + str(i)})


def test_sqlite_requests_leave_checkpoints_to_the_background(tmp_path: Path) -> None:
    """A commit no longer checkpoints at SQLite's default 1,000 pages; `checkpoint` copies
    every committed page into the database file, and the WAL then restarts."""
    engine = make_db_engine(f"sqlite:///{tmp_path}/g.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == AUTOCHECKPOINT_PAGES
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    with write_transaction(engine) as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    _write_rows(engine, 1200)  # > 1,000 pages of WAL: SQLite's default would have checkpointed
    pages, done = checkpoint(engine) or (0, -1)
    assert pages > 1000 and done == pages  # nothing had been copied before, all of it is now
    _write_rows(engine, 3)  # the first writer after a complete checkpoint restarts the WAL
    pages_after, done_after = checkpoint(engine) or (0, -1)
    assert 0 < pages_after < 50 and done_after == pages_after
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1203
    engine.dispose()


def test_checkpoint_is_sqlite_only() -> None:
    engine = make_db_engine("postgresql://u:p@127.0.0.1:1/none")  # never connected
    assert checkpoint(engine) is None


def test_background_job_outlives_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    """One failed run (e.g. a locked database) is logged; the loop keeps running the job."""
    calls: list[int] = []
    third = asyncio.Event()

    def job() -> None:
        calls.append(len(calls))
        if len(calls) == 3:
            third.set()
        if len(calls) == 1:
            raise RuntimeError("database is locked")

    async def run() -> None:
        task = asyncio.create_task(_every(0.01, "test job", job))
        await third.wait()
        task.cancel()

    with caplog.at_level(logging.ERROR, logger="avokit.gateway"):
        asyncio.run(asyncio.wait_for(run(), 10))
    assert len(calls) >= 3
    assert "background job failed: test job" in caplog.text and "database is locked" in caplog.text


def test_tokenizers_load_at_startup_not_on_the_first_request(tmp_path: Path) -> None:
    """Loading a tokenizer takes seconds; done by the first request it would stall the event
    loop for every other request, so the app loads them while it starts."""
    from fastapi.testclient import TestClient
    from gateway_support import SECRET, build_registry

    from avokit.gateway.app import create_app
    from avokit.gateway.db.session import run_migrations
    from avokit.gateway.engines.base import scan_registry
    from avokit.gateway.engines.vllm import VLLMEngine
    from avokit.gateway.settings import load_settings

    build_registry(tmp_path / "registry")
    db = f"sqlite:///{tmp_path}/g.db"
    run_migrations(db)
    settings = load_settings(registry=tmp_path / "registry", db_url=db, secret=SECRET)
    engine = VLLMEngine(scan_registry(settings.registry), "http://127.0.0.1:9")  # never called
    with TestClient(create_app(settings, engine=engine)) as client:
        assert set(engine._tokenizers) == {"avo-tiny"}
        assert client.get("/health").status_code == 200
