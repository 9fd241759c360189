"""Readiness: whether this process can serve a request now, part by part.

* ``database``: reachable, and at the newest migration (a replica started against a database
  another version migrated, or never migrated, is not ready);
* ``redis``: the shared limit store answers (only when ``--redis`` is configured);
* ``engine``: every served model generates one token (in-process engine) or the upstream
  answers one (vLLM).

The engine check costs a generation, and ``/health/ready`` needs no key: its result is kept
for ``engine_interval_s`` and concurrent probes share one check, so probes cannot load the
engine. The database and Redis checks are one round trip each and run on every probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine as Database
from sqlalchemy import text

from avokit.gateway.db.session import MIGRATIONS_DIR, read_connection
from avokit.gateway.engines.base import Engine, GenParams

log = logging.getLogger("avokit.gateway")
OK = "ok"


def head_revision() -> str:
    """The newest migration shipped with this version."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def database_state(db: Database, head: str) -> str:
    """``ok``, or what is wrong (blocking: one query)."""
    with read_connection(db) as conn:
        current = conn.scalar(text("SELECT version_num FROM alembic_version"))
    if current != head:
        return f"schema at revision {current}, this version needs {head} (run migrations)"
    return OK


async def engine_state(engine: Engine, models: list[str]) -> str:
    """``ok`` when one token is generated for every served model."""
    for model in models:
        tok = await asyncio.to_thread(engine.tokenizer, model)
        first = tok.eos_token_id if tok.eos_token_id is not None else 0
        await engine.complete(model, GenParams([int(first)], 1, temperature=0.0))
    return OK


@dataclass
class Readiness:
    """The checks of one process (built by ``create_app``)."""

    db: Database
    engine: Engine
    models: list[str]
    redis_ping: Callable[[], bool] | None  # None: no Redis configured
    timeout_s: float = 5.0
    engine_interval_s: float = 10.0
    head: str = field(default_factory=head_revision)
    _engine_result: tuple[float, str] | None = field(default=None, init=False)
    _engine_lock: asyncio.Lock | None = field(default=None, init=False)

    async def _bounded(self, check: Callable[[], Awaitable[str]]) -> str:
        try:
            return await asyncio.wait_for(check(), self.timeout_s)
        except asyncio.TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except Exception as err:  # what failed, never its text (a URL may hold a password)
            return f"failed ({type(err).__name__})"

    async def _engine(self) -> str:
        if self._engine_lock is None:
            self._engine_lock = asyncio.Lock()
        async with self._engine_lock:  # concurrent probes wait for the one check
            cached = self._engine_result
            if cached is not None and time.monotonic() - cached[0] < self.engine_interval_s:
                return cached[1]
            state = await self._bounded(lambda: engine_state(self.engine, self.models))
            self._engine_result = (time.monotonic(), state)
            return state

    async def check(self) -> dict[str, str]:
        """Each part's state: ``ok``, ``not configured`` or what is wrong."""
        async def database() -> str:
            return await asyncio.to_thread(database_state, self.db, self.head)

        async def redis() -> str:
            assert self.redis_ping is not None
            return OK if await asyncio.to_thread(self.redis_ping) else "unreachable"

        parts = {"database": self._bounded(database),
                 "redis": (self._bounded(redis) if self.redis_ping is not None
                           else _constant("not configured")),
                 "engine": self._engine()}
        states = await asyncio.gather(*parts.values())
        return dict(zip(parts, states))


async def _constant(value: str) -> str:
    return value
