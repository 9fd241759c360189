"""Per-key spend caps: held with the credit reservation, so 200 concurrent requests (one
process on SQLite, or two replicas sharing PostgreSQL and Redis) never spend past the cap."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import (
    SECRET,
    InProcess,
    RedisServer,
    Server,
    auth,
    fresh_db,
    redis_server_binary,
)

from avokit.gateway.services import keys, spendcaps
from avokit.gateway.settings import load_settings

PRICE = {"*": {"input": 1000, "output": 1000}}
# the mock upstream answers exactly max_tokens (8) tokens: worst case == charge, so the number
# of requests a cap admits is exact
CHAT = {"model": "avo-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def test_periods_are_utc_calendar() -> None:
    t = datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc)
    assert spendcaps.period_start(t, "day") == datetime(2026, 12, 31, tzinfo=timezone.utc)
    month = spendcaps.period_start(t, "month")
    assert month == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert spendcaps.period_end(month, "month") == datetime(2027, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="period"):
        spendcaps.period_start(t, "week")


def test_cap_settings_are_checked(registry: Path, tmp_path: Path) -> None:
    from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
    from avokit.gateway.errors import ConfigError

    db = f"sqlite:///{tmp_path}/c.db"
    run_migrations(db)
    sessions = session_factory(make_db_engine(db))
    for cap, period, match in [(100, None, "both"), (None, "month", "both"),
                               (-1, "month", "negative"), (100, "week", "spend_cap_period")]:
        with sessions.begin() as s, pytest.raises(ConfigError, match=match):
            keys.create_key(s, SECRET, name="x", prices=PRICE, spend_cap_micros=cap,
                            spend_cap_period=period)
    with sessions.begin() as s:
        _, info = keys.create_key(s, SECRET, name="x", prices=PRICE)
        keys.set_spend_cap(s, info.id, 500, "day")
    with sessions() as s:
        row = keys.get_key(s, info.id)
        assert (row.spend_cap_micros, row.spend_cap_period) == (500, "day")


async def _burst(urls: list[str], key: str, n: int,
                 client: httpx.AsyncClient | None = None) -> list[httpx.Response]:
    async def one(i: int, c: httpx.AsyncClient) -> httpx.Response:
        base = urls[i % len(urls)]
        return await c.post(base + "/v1/chat/completions", json=CHAT, headers=auth(key))

    if client is not None:
        return list(await asyncio.gather(*(one(i, client) for i in range(n))))
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        return list(await asyncio.gather(*(one(i, c) for i in range(n))))


def _check(responses: list[httpx.Response], worst: int, cap: int, spent: tuple[int, int],
           charged: int) -> None:
    codes = [r.status_code for r in responses]
    admitted = codes.count(200)
    assert admitted + codes.count(402) == len(codes), sorted(set(codes))
    assert admitted == cap // worst  # exactly as many as fit, none more
    refused = [r.json()["error"] for r in responses if r.status_code == 402]
    assert refused and all(e["code"] == "spend_cap_exceeded" for e in refused)
    assert "monthly spend cap of" in refused[0]["message"]
    assert spent == (admitted * worst, 0)  # (spent, still reserved)
    assert charged == admitted * worst <= cap


def test_cap_holds_under_200_concurrent_requests(registry: Path, upstream: str,
                                                 tmp_path: Path) -> None:
    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/g.db",
                                 secret=SECRET, engine="vllm", upstream=upstream)
        async with InProcess(settings) as gw:
            key, info = gw.key(credit_micros=10**9, prices=PRICE, rpm=10**6, tpm=10**9)
            probe = await gw.http.post("/v1/chat/completions", json=CHAT, headers=auth(key))
            worst = sum(c.amount_micros for c in gw.charges(info.account_id)) * -1
            assert probe.status_code == 200 and worst > 0
            cap = worst * 37 + worst // 2  # room for 36 more after the probe
            with gw.sessions.begin() as s:
                keys.set_spend_cap(s, info.id, cap, "month")
            responses = await _burst([""], key, 200, client=gw.http)
            with gw.sessions() as s:
                spent = spendcaps.spent(s, info.id, "month")
            charged = -sum(c.amount_micros for c in gw.charges(info.account_id))
            _check([probe, *responses], worst, cap, spent, charged)

    asyncio.run(run())


def test_cap_holds_across_two_replicas(registry: Path, upstream: str, tmp_path: Path) -> None:
    """Two `uvicorn` replicas sharing PostgreSQL and Redis, 200 requests at once."""
    from sqlalchemy import select

    from avokit.gateway.db.models import LedgerEntry
    from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory

    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary")
    db = fresh_db("postgresql", tmp_path)
    run_migrations(db)
    sessions = session_factory(make_db_engine(db))
    worst = 1000 * (8 + 8)  # checked below against the ledger's first charge
    with sessions.begin() as s:
        key, info = keys.create_key(s, SECRET, name="capped", credit_micros=10**9,
                                    prices=PRICE, rpm=10**6, tpm=10**9)
    redis = RedisServer(binary, tmp_path / "redis").start()
    env = {"AVOKIT_SECRET": SECRET, "AVOKIT_REGISTRY": str(registry), "AVOKIT_DB_URL": db,
           "AVOKIT_ENGINE": "vllm", "AVOKIT_UPSTREAM": upstream, "AVOKIT_REDIS_URL": redis.url,
           "PYTEST_XDIST_WORKER": os.environ.get("PYTEST_XDIST_WORKER", "")}
    servers = [Server(env, tmp_path / f"r{i}.log", start_timeout_s=300).start() for i in (0, 1)]
    try:
        probe = httpx.post(servers[0].url + "/v1/chat/completions", json=CHAT,
                           headers=auth(key), timeout=60)
        assert probe.status_code == 200, probe.text
        with sessions() as s:
            (first,) = s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "charge"))
            worst = -first.amount_micros
        cap = worst * 41 + worst // 3
        with sessions.begin() as s:
            keys.set_spend_cap(s, info.id, cap, "month")
        responses = asyncio.run(_burst([srv.url for srv in servers], key, 200))
        with sessions() as s:
            spent = spendcaps.spent(s, info.id, "month")
            charged = -sum(e.amount_micros for e in s.scalars(
                select(LedgerEntry).where(LedgerEntry.kind == "charge")))
        _check([probe, *responses], worst, cap, spent, charged)
    finally:
        for srv in servers:
            srv.stop()
        redis.stop()
