"""Operating the gateway: Prometheus metrics (two real workers, scraped), readiness that goes
503 and back with the real services, request ids from the response to the ledger row, and
the last bad inputs. Spend caps are in test_gateway_caps.py."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import (
    SECRET,
    InProcess,
    RedisServer,
    Server,
    auth,
    free_port,
    redis_server_binary,
    run_mock_upstream,
    samples,
    total,
)

from avokit.gateway.errors import ConfigError
from avokit.gateway.settings import load_settings

CHAT = {"model": "avo-tiny", "messages": [{"role": "user", "content": "secret prompt words"}],
        "max_tokens": 8}
PRICE = {"*": {"input": 1000, "output": 3000}}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # 8 tokens, 2 per chunk, 20 ms apart: streams are long enough to leave mid-way
    yield from run_mock_upstream(tmp_path_factory.mktemp("up"), MOCK_TOKENS="8",
                                 MOCK_DELAY_S="0.02", MOCK_CHUNK_TOKENS="2")


def _ledger(db: str, account_id: int) -> list[Any]:
    from sqlalchemy import select

    from avokit.gateway.db.models import LedgerEntry
    from avokit.gateway.db.session import make_db_engine, session_factory

    engine = make_db_engine(db)
    try:
        with session_factory(engine)() as s:
            return list(s.scalars(select(LedgerEntry).where(
                LedgerEntry.account_id == account_id, LedgerEntry.kind == "charge")))
    finally:
        engine.dispose()


def test_metrics_two_workers_scraped(registry: Path, upstream: str, tmp_path: Path) -> None:
    """`avokit serve --workers 2 --metrics-bind`: after a scripted load the admin listener's
    numbers are the ledger's, summed over both workers; no key material or prompt text in
    it; /metrics on the customer port needs the metrics token."""
    from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
    from avokit.gateway.services import keys

    db = f"sqlite:///{tmp_path}/m.db"
    run_migrations(db)
    with session_factory(make_db_engine(db)).begin() as s:
        key, info = keys.create_key(s, SECRET, name="paying", credit_micros=10**9, prices=PRICE)
        limited, _ = keys.create_key(s, SECRET, name="one-rpm", rpm=1, credit_micros=10**9,
                                     prices=PRICE)
        broke, _ = keys.create_key(s, SECRET, name="broke", prices=PRICE)
    multiproc = tmp_path / "prom"
    admin = free_port()
    token = "metrics-token-0123456789"
    srv = Server({"AVOKIT_SECRET": SECRET, "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
                  "AVOKIT_METRICS_TOKEN": token}, tmp_path / "serve.log",
                 cli=["--registry", str(registry), "--db", db, "--engine", "vllm",
                      "--upstream", upstream, "--workers", "2",
                      "--metrics-bind", f"127.0.0.1:{admin}"],
                 start_timeout_s=300).start()  # two workers importing on a loaded machine
    try:
        async def load() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
                whole = [client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
                         for _ in range(12)]
                streams = [client.post("/v1/chat/completions", json={**CHAT, "stream": True},
                                       headers=auth(key)) for _ in range(6)]
                return list(await asyncio.gather(*whole, *streams))

        answered = asyncio.run(load())
        assert [r.status_code for r in answered] == [200] * 18
        # limits are per worker without Redis: each worker admits this key once a minute, so
        # of 3 requests at least one is refused, whichever workers they reach
        codes = [httpx.post(srv.url + "/v1/chat/completions", json=CHAT, headers=auth(limited),
                            timeout=60).status_code for _ in range(3)]
        ok, limited_429 = codes.count(200), codes.count(429)
        assert ok >= 1 and limited_429 >= 1 and ok + limited_429 == 3, codes
        assert httpx.post(srv.url + "/v1/chat/completions", json=CHAT, headers=auth(broke),
                          timeout=60).status_code == 402
        assert httpx.post(srv.url + "/v1/chat/completions", json={**CHAT, "model": "nope"},
                          headers=auth(key)).status_code == 404
        # the mechanism: both workers wrote metric files (one set per pid)
        pids = {m.group(1) for m in (re.search(r"_(\d+)\.db$", p.name)
                                     for p in multiproc.glob("*.db")) if m}
        assert len(pids) >= 2, sorted(p.name for p in multiproc.glob("*"))

        text = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
        found = samples(text)
        route = "/v1/chat/completions"
        assert total(found, "avokit_requests_total", route=route, model="avo-tiny",
                     status="200") == 18 + ok
        assert total(found, "avokit_requests_total", route=route, status="429") == limited_429
        assert total(found, "avokit_requests_total", route=route, status="402") == 1
        # an unknown model is answered before a model label is given: no new label value
        assert total(found, "avokit_requests_total", route=route, model="",
                     status="404") == 1
        assert total(found, "avokit_refusals_total", kind="rate_limit_requests") == limited_429
        assert total(found, "avokit_refusals_total", kind="credit") == 1
        charges = _ledger(db, info.account_id)
        assert len(charges) == 18
        assert total(found, "avokit_generation_tokens_total", model="avo-tiny") == \
            sum(c.completion_tokens for c in charges) + 8 * ok  # + the one-rpm key's
        prompt_each = charges[0].prompt_tokens
        assert total(found, "avokit_prompt_tokens_total") == prompt_each * (18 + ok)
        assert total(found, "avokit_spend_micros_total") == \
            -sum(c.amount_micros for c in charges) - ok * charges[0].amount_micros
        assert total(found, "avokit_time_to_first_token_seconds_count") == 6
        assert total(found, "avokit_inter_token_latency_seconds_count") == 6 * 6  # 2-token chunks
        assert total(found, "avokit_e2e_request_latency_seconds_count",
                     model="avo-tiny") == 18 + 3 + 1
        assert total(found, "avokit_open_reservations") == 0
        assert total(found, "avokit_requests_running") == 0
        assert "avokit_requests_waiting" in text and "avokit_engine_errors_total" in text
        for secret in (key, limited, broke, info.id, "secret prompt words", SECRET, token):
            assert secret not in text

        # the customer port: no token, a wrong one, the right one
        assert httpx.get(srv.url + "/metrics").status_code == 401
        assert httpx.get(srv.url + "/metrics", headers=auth(key)).status_code == 401
        same = httpx.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        assert same.status_code == 200 and "avokit_requests_total" in same.text
        # every answered request's id is in the access log, with the ledger row's
        ids = [r.headers["x-request-id"] for r in answered]
        assert {c.request_id for c in charges} == set(ids)
        log = (tmp_path / "serve.log").read_text()
        assert all(i in log for i in ids)
    finally:
        srv.stop()


def test_metrics_route_is_absent_without_a_token(registry: Path, upstream: str,
                                                 tmp_path: Path) -> None:
    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/g.db",
                                 secret=SECRET, engine="vllm", upstream=upstream)
        async with InProcess(settings) as gw:
            key, _ = gw.key(credit_micros=10**9)
            r = await gw.http.get("/metrics", headers=auth(key))
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    asyncio.run(run())


def test_metrics_turned_off_keep_and_serve_nothing(registry: Path, upstream: str,
                                                  tmp_path: Path) -> None:
    async def run() -> None:
        token = "metrics-token-0123456789"
        on = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/on.db", secret=SECRET,
                           engine="vllm", upstream=upstream, metrics_token=token)
        off = on.model_copy(update={"metrics_enabled": False, "db_url": f"sqlite:///{tmp_path}/off.db"})
        bearer = {"Authorization": f"Bearer {token}"}
        async with InProcess(on) as gw:  # the mechanism: with metrics on, the same token scrapes
            key, _ = gw.key(credit_micros=10**9)
            r = await gw.http.post("/v1/chat/completions", headers=auth(key), json={
                "model": "avo-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            assert r.status_code == 200
            assert "avokit_requests_total" in (await gw.http.get("/metrics", headers=bearer)).text
        async with InProcess(off) as gw:
            assert gw.app.state.metrics is None
            key, _ = gw.key(credit_micros=10**9)
            r = await gw.http.post("/v1/chat/completions", headers=auth(key), json={
                "model": "avo-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            assert r.status_code == 200 and r.headers["x-request-id"]
            r = await gw.http.get("/metrics", headers=bearer)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    asyncio.run(run())
    with pytest.raises(ConfigError, match=r"metrics_enabled \(AVOKIT_METRICS_ENABLED\).*metrics_bind"):
        load_settings(registry=registry, secret=SECRET, metrics_enabled=False, metrics_bind="127.0.0.1:9100")


def test_ready_follows_database_redis_and_upstream(registry: Path, tmp_path: Path) -> None:
    """/health/ready is 503 naming the part that is down, and 200 again once it is back;
    /health and /health/live stay 200 throughout."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary")
    redis = RedisServer(binary, tmp_path / "redis").start()
    up_port = free_port()
    db_path = tmp_path / "g.db"

    async def ready(gw: InProcess) -> tuple[int, dict[str, Any]]:
        r = await gw.http.get("/health/ready")
        for path in ("/health", "/health/live"):
            assert (await gw.http.get(path)).status_code == 200
        return r.status_code, r.json()

    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{db_path}",
                                 secret=SECRET, engine="vllm",
                                 upstream=f"http://127.0.0.1:{up_port}", redis_url=redis.url,
                                 ready_engine_interval_s=0, ready_timeout_s=3)
        async with InProcess(settings) as gw:
            status, body = await ready(gw)  # the upstream is not started yet
            assert status == 503 and body["failing"] == ["engine"], body
            mock = run_mock_upstream(tmp_path, port=up_port, MOCK_TOKENS="2", MOCK_DELAY_S="0")
            next(mock)
            try:
                status, body = await ready(gw)
                assert status == 200 and body["checks"] == {
                    "database": "ok", "redis": "ok", "engine": "ok"}, body
                redis.stop()
                status, body = await ready(gw)
                assert status == 503 and body["failing"] == ["redis"], body
                redis.start()  # same port, back
                assert (await ready(gw))[0] == 200
            finally:
                next(mock, None)

    try:
        asyncio.run(run())
    finally:
        redis.stop()


def _pg(data: Path, port: int, *args: str) -> str:
    """Run .ci/postgres.sh for a throwaway cluster (start it), or pg_ctl ``args`` on it."""
    import glob
    import os
    import subprocess

    if not args:
        env = {**os.environ, "AVOKIT_PG_PORT": str(port), "AVOKIT_PG_DATA": str(data)}
        out = subprocess.run(["bash", str(Path(__file__).parents[1] / ".ci/postgres.sh")],
                             env=env, check=True, capture_output=True, text=True).stdout
        return out.strip().split("=", 1)[1]
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]
    cmd = [pg_ctl, "-D", str(data), *args]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True)
    return ""


def test_ready_follows_a_stopped_postgres(registry: Path, upstream: str) -> None:
    """A real PostgreSQL cluster of its own, stopped and started again under the gateway."""
    import glob
    import shutil
    import tempfile

    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        pytest.skip("PostgreSQL server binaries are not installed")
    data = Path(tempfile.mkdtemp(prefix="avokit-pg-ready-"))
    port = free_port()
    url = _pg(data, port)

    async def run() -> None:
        settings = load_settings(registry=registry, db_url=url, secret=SECRET, engine="vllm",
                                 upstream=upstream, ready_timeout_s=5)
        async with InProcess(settings) as gw:
            r = await gw.http.get("/health/ready")
            assert r.status_code == 200, r.text
            await asyncio.to_thread(_pg, data, port, "stop", "-m", "fast", "-w")
            r = await gw.http.get("/health/ready")
            assert r.status_code == 503 and r.json()["failing"] == ["database"], r.text
            assert "avokit" not in r.text  # the URL (with its password) is never shown
            assert (await gw.http.get("/health/live")).status_code == 200
            await asyncio.to_thread(_pg, data, port)
            r = await gw.http.get("/health/ready")
            assert r.status_code == 200, r.text

    try:
        asyncio.run(run())
    finally:
        _pg(data, port, "stop", "-m", "immediate", "-w")
        shutil.rmtree(data, ignore_errors=True)


def test_request_ids(registry: Path, upstream: str, tmp_path: Path) -> None:
    """Every response carries x-request-id: a safe client id is kept, anything else is
    replaced; errors, streams and 413s carry it; the ledger row and audit rows name it."""
    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/g.db",
                                 secret=SECRET, engine="vllm", upstream=upstream,
                                 max_body_bytes=4096)
        async with InProcess(settings) as gw:
            key, info = gw.key(credit_micros=10**9)
            made = re.compile(r"req_[0-9a-f]{24}")
            r = await gw.http.post("/v1/chat/completions", json=CHAT,
                                   headers={**auth(key), "x-request-id": "ticket-42.a:b_c"})
            assert r.status_code == 200 and r.headers["x-request-id"] == "ticket-42.a:b_c"
            for bad in ("x" * 129, "has space", "<script>", "-leading"):
                r = await gw.http.get("/health", headers={"x-request-id": bad})
                assert made.fullmatch(r.headers["x-request-id"]), bad
            async with gw.http.stream("POST", "/v1/chat/completions",
                                      json={**CHAT, "stream": True}, headers=auth(key)) as s:
                streamed = s.headers["x-request-id"]
                assert made.fullmatch(streamed)
                async for _ in s.aiter_bytes():
                    pass
            for response in [await gw.http.post("/v1/chat/completions", json=CHAT),
                             await gw.http.post("/v1/chat/completions", content=b"x" * 5000,
                                                headers=auth(key)),
                             await gw.http.get("/nowhere"),
                             await gw.http.post("/v1/chat/completions", json={"model": 1},
                                                headers=auth(key))]:
                assert response.status_code in (400, 401, 404, 413)
                assert made.fullmatch(response.headers["x-request-id"])
                assert "error" in response.json()
            assert {c.request_id for c in gw.charges(info.account_id)} == {
                "ticket-42.a:b_c", streamed}

    asyncio.run(run())


def test_last_bad_inputs(registry: Path, upstream: str, tmp_path: Path) -> None:
    """Deep JSON is a cheap 400; a request larger than the key's whole tpm is a 400 naming
    the limit (not a retryable 429); a key with credit but no price is refused at creation."""
    from avokit.gateway.errors import ConfigError
    from avokit.gateway.services import keys

    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/g.db",
                                 secret=SECRET, engine="vllm", upstream=upstream)
        async with InProcess(settings) as gw:
            key, info = gw.key(credit_micros=10**9, tpm=50)
            deep = "[" * 100_000 + "]" * 100_000
            for raw in (f'{{"model":"avo-tiny","prompt":"x","zzz":{deep}}}',
                        f'{{"model":"avo-tiny","prompt":{deep}}}', deep,
                        '{"a":' * 70 + "1" + "}" * 70):
                start = time.perf_counter()
                r = await gw.http.post("/v1/completions", content=raw.encode(),
                                       headers={**auth(key), "content-type": "application/json"})
                assert r.status_code == 400, r.text
                assert r.json()["error"]["code"] == "invalid_json"
                assert "levels deep" in r.json()["error"]["message"]
                assert time.perf_counter() - start < 2
            r = await gw.http.post("/v1/completions", headers=auth(key), json={
                "model": "avo-tiny", "prompt": "hello", "max_tokens": 60})
            assert r.status_code == 400 and "Retry-After" not in r.headers
            err = r.json()["error"]
            assert err["param"] == "max_tokens" and "50 tokens per minute" in err["message"]
            assert gw.charges(info.account_id) == []
            with gw.sessions.begin() as s, pytest.raises(ConfigError, match="prices"):
                keys.create_key(s, SECRET, name="free-by-mistake", credit_micros=1000)

    asyncio.run(run())


def test_vllm_disconnect_bills_the_upstream_token_count(registry: Path, tmp_path: Path) -> None:
    """The upstream sends 2 tokens per chunk; a client leaving after the first chunk is billed
    2 tokens (the upstream's continuous usage), not 1 per chunk. A real server: the client
    really disconnects."""
    from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
    from avokit.gateway.services import keys

    db = f"sqlite:///{tmp_path}/g.db"
    run_migrations(db)
    with session_factory(make_db_engine(db)).begin() as s:
        key, info = keys.create_key(s, SECRET, name="leaves", credit_micros=10**9, prices=PRICE)
    mock = run_mock_upstream(tmp_path, MOCK_TOKENS="8", MOCK_DELAY_S="1",
                             MOCK_CHUNK_TOKENS="2")
    upstream = next(mock)
    srv = Server({"AVOKIT_SECRET": SECRET, "AVOKIT_REGISTRY": str(registry), "AVOKIT_DB_URL": db,
                  "AVOKIT_ENGINE": "vllm", "AVOKIT_UPSTREAM": upstream},
                 tmp_path / "serve.log", start_timeout_s=300).start()
    try:
        body = {"model": "avo-tiny", "prompt": "hello", "max_tokens": 8, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/completions", json=body, headers=auth(key),
                          timeout=60) as s:
            for line in s.iter_lines():
                if line.startswith("data: ") and '"text":"tok tok "' in line:
                    break
        for _ in range(200):
            charges = _ledger(db, info.account_id)
            if charges:
                break
            time.sleep(0.05)
        (charge,) = charges
        assert charge.completion_tokens == 2
    finally:
        srv.stop()
        next(mock, None)
