"""Gateway end-to-end: real uvicorn servers on 127.0.0.1, the official `openai` client,
SQLite and PostgreSQL (PostgreSQL skipped only without AVOKIT_TEST_PG_URL)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from avokit.gateway.db.models import Account, LedgerEntry, Reservation
from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
from avokit.gateway.services import keys

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import SECRET, Server, build_registry, fresh_db, run_mock_upstream

ROOT = Path(__file__).resolve().parents[1]
MODEL = "avo-tiny"
PRICE = {"*": {"input": 1000, "output": 3000}}  # micro-units per 1M tokens


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    build_registry(root, MODEL)
    build_registry(root, "not-released", passed=False)  # gate failed: must never be served
    return root


class Env:
    """One database, its session factory, and servers started on it."""

    def __init__(self, url: str, registry: Path, tmp: Path) -> None:
        run_migrations(url)
        self.url = url
        self.engine = make_db_engine(url)
        self.sessions = session_factory(self.engine)
        self.registry = registry
        self.tmp = tmp
        self.servers: list[Server] = []

    def server_env(self, **extra: str) -> dict[str, str]:
        return {"AVOKIT_REGISTRY": str(self.registry), "AVOKIT_DB_URL": self.url,
                "AVOKIT_SECRET": SECRET, "AVOKIT_RESERVATION_STALE_S": "0.5",
                "AVOKIT_RECONCILE_INTERVAL_S": "600", "AVOKIT_BATCH_WAIT_MS": "2", **extra}

    def server(self, name: str, **extra: str) -> Server:
        srv = Server(self.server_env(**extra), self.tmp / f"{name}.log").start()
        self.servers.append(srv)
        return srv

    def key(self, **kw: Any) -> tuple[str, keys.KeyInfo]:
        kw.setdefault("name", "test")
        kw.setdefault("prices", PRICE)
        with self.sessions.begin() as s:
            return keys.create_key(s, SECRET, **kw)

    def account(self, account_id: int) -> Account:
        with self.sessions() as s:
            acc = s.get(Account, account_id)
            assert acc is not None
            return acc

    def ledger(self, account_id: int) -> list[LedgerEntry]:
        with self.sessions() as s:
            return list(s.scalars(select(LedgerEntry).where(LedgerEntry.account_id == account_id)))

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.tmp.glob("*.log"))

    def close(self) -> None:
        for srv in self.servers:
            srv.stop()
        self.engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, registry: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp(f"gw-{request.param}")
    e = Env(fresh_db(request.param, tmp), registry, tmp)
    yield e
    e.close()
    # a key in any log line of any server fails the run
    key_lines = [line for line in e.logs().splitlines() if "sk-avo-" in line
                 and "sk-avo-[REDACTED]" not in line]
    assert not key_lines, key_lines[:3]


@pytest.fixture(scope="module")
def server(env: Env) -> Server:
    return env.server("main")


def client(srv: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)


def test_completions_chat_and_streaming_with_usage(env: Env, server: Server) -> None:
    key, info = env.key(credit_micros=10_000_000)
    c = client(server, key)
    assert [m.id for m in c.models.list().data] == [MODEL]

    r = c.completions.create(model=MODEL, prompt="Hello world", max_tokens=6, temperature=0)
    assert r.usage is not None and r.usage.completion_tokens == 6
    assert r.usage.prompt_tokens > 0 and r.choices[0].finish_reason == "length"

    chat = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                     max_tokens=5, temperature=0)
    assert chat.usage is not None and chat.usage.completion_tokens == 5
    assert chat.choices[0].message.role == "assistant"

    chunks = list(c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5,
        temperature=0, stream=True, stream_options={"include_usage": True}))
    usage = [ch.usage for ch in chunks if ch.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 5
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == chat.choices[0].message.content  # greedy: same text either way

    text_chunks = list(c.completions.create(model=MODEL, prompt="Hello", max_tokens=3,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert [ch.usage.completion_tokens for ch in text_chunks if ch.usage] == [3]

    # customer may take up to 5 alternatives per token
    lp = c.completions.create(model=MODEL, prompt="Hello", max_tokens=2, logprobs=5,
                              temperature=0)
    assert lp.choices[0].logprobs is not None and len(lp.choices[0].logprobs.tokens) == 2

    # billing: every response's usage equals a ledger charge at the key's prices
    charges = [e for e in env.ledger(info.account_id) if e.kind == "charge"]
    assert len(charges) == 5
    acc = env.account(info.account_id)
    assert acc.reserved_micros == 0
    assert acc.credit_micros == 10_000_000 + sum(e.amount_micros for e in charges)


def test_eval_key_echo_logprobs_scores_prompt(env: Env, server: Server) -> None:
    key, _ = env.key(scope="eval", credit_micros=10_000_000)
    r = client(server, key).completions.create(model=MODEL, prompt="Hello world again",
                                               max_tokens=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    assert lp is not None and r.choices[0].text == "Hello world again"
    assert lp.token_logprobs[0] is None and all(x < 0 for x in lp.token_logprobs[1:])
    assert len(lp.tokens) == r.usage.prompt_tokens


def _err(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_error_codes(env: Env, server: Server) -> None:
    url = server.url + "/v1/completions"
    good, info = env.key(credit_micros=10_000_000, models=[MODEL])
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 2}
    # 401: missing, malformed, unknown, revoked, expired: one identical body
    revoked, rinfo = env.key(credit_micros=1000)
    with env.sessions.begin() as s:
        keys.revoke(s, rinfo.id)
    from datetime import datetime, timedelta, timezone
    expired, _ = env.key(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    bodies = []
    for auth in [None, "Bearer nope", "Bearer sk-avo-unknownunknownunknown", f"Bearer {revoked}",
                 f"Bearer {expired}"]:
        r = httpx.post(url, json=body, headers={"Authorization": auth} if auth else {})
        assert r.status_code == 401
        bodies.append(r.content)
    assert len(set(bodies)) == 1
    h = {"Authorization": f"Bearer {good}"}
    # 404 for a model the key may not use: the same body as for one that does not exist
    other, _ = env.key(credit_micros=10_000, models=["someone-else"])
    r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 404 and _err(r)["param"] == "model"
    # 403 model-stealing guards for customer keys
    for extra, param in [({"logit_bias": {"5": 10}}, "logit_bias"),
                         ({"echo": True, "logprobs": 1}, "echo"), ({"logprobs": 6}, "logprobs")]:
        r = httpx.post(url, json={**body, **extra}, headers=h)
        assert r.status_code == 403 and _err(r)["param"] == param
    r = httpx.post(server.url + "/v1/chat/completions", headers=h, json={
        "model": MODEL, "messages": [{"role": "user", "content": "x"}], "logprobs": True,
        "top_logprobs": 6})
    assert r.status_code == 403 and _err(r)["param"] == "top_logprobs"
    # 400 naming the field
    r = httpx.post(url, json={**body, "max_tokens": 100_000}, headers=h)
    assert r.status_code == 400 and _err(r)["param"] == "max_tokens"
    r = httpx.post(url, json={**body, "prompt": "Hello " * 400}, headers=h)
    assert r.status_code == 400 and _err(r)["param"] == "prompt"
    r = httpx.post(url, content=b'{"model": ', headers={**h, "content-type": "application/json"})
    assert r.status_code == 400 and _err(r)["code"] == "invalid_json"
    r = httpx.post(url, json={**body, "temperature": 9}, headers=h)
    assert r.status_code == 400 and _err(r)["param"] == "temperature"
    # 402: credit below the worst case
    poor, _ = env.key(credit_micros=3, prices={"*": {"input": 1_000_000, "output": 1_000_000}})
    r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {poor}"})
    assert r.status_code == 402 and _err(r)["type"] == "insufficient_quota"
    # 429 with Retry-After and x-ratelimit-* headers
    slow, _ = env.key(credit_micros=10_000_000, rpm=1)
    hs = {"Authorization": f"Bearer {slow}"}
    assert httpx.post(url, json=body, headers=hs).status_code == 200
    r = httpx.post(url, json=body, headers=hs)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    # nothing was billed for refused requests
    assert all(e.kind == "topup" for e in env.ledger(info.account_id))


def _flat_routes(routes: list[Any]) -> list[Any]:
    # FastAPI >= 0.16x keeps included routers as lazy wrappers around the original router
    flat = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        flat += _flat_routes(inner.routes) if inner is not None else [route]
    return flat


def test_every_route_but_health_needs_a_key(env: Env, server: Server) -> None:
    from avokit.gateway.app import create_app
    from avokit.gateway.settings import GatewaySettings

    app = create_app(GatewaySettings(registry=env.registry, db_url=env.url, secret=SECRET))
    checked = 0
    # the web console's sign-in pages are open (their posts need the pre-sign-in CSRF token);
    # every other console page needs a console session: a GET redirects to its sign-in page,
    # anything else is 401
    signin = {"/console/signin", "/console/admin/signin"}
    for route in _flat_routes(app.routes):
        for method in getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}:
            path = route.path.replace("{key_id}", "key_x").replace("{account_id}", "1") \
                .replace("{name}", "avo-tiny")
            r = httpx.request(method, server.url + path, json={})
            if route.path in ("/health", "/health/live"):
                assert r.status_code == 200
            elif route.path == "/health/ready":
                assert r.status_code in (200, 503)
                assert set(r.json()["checks"]) == {"database", "redis", "engine"}
            elif route.path == "/metrics":  # no metrics token configured: as if absent
                assert r.status_code == 404, (method, path)
            elif route.path in signin:
                assert r.status_code == (200 if method == "GET" else 403), (method, path)
            elif path.startswith("/console/admin") and method == "GET":
                assert (r.status_code, r.headers.get("location")) == (303, "/console/admin/signin"), path
            elif path.startswith("/console") and method == "GET":
                assert (r.status_code, r.headers.get("location")) == (303, "/console/signin"), path
            else:
                assert r.status_code == 401, (method, path)
                checked += 1
    assert checked >= 3
    # no route serves weights, tokenizer or config files, with or without a key
    key, _ = env.key(credit_micros=1)
    for path in ["/avo-tiny/config.json", "/v1/models/avo-tiny/model.safetensors",
                 "/registry/avo-tiny/tokenizer.json", "/openapi.json", "/docs"]:
        r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code in (401, 404, 405), path


async def _burst(urls: list[str], key: str, n: int, max_tokens: int) -> list[int]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as c:
        async def one(i: int) -> int:
            r = await c.post(urls[i % len(urls)] + "/v1/completions",
                             headers={"Authorization": f"Bearer {key}"},
                             json={"model": MODEL, "prompt": "Hello", "max_tokens": max_tokens,
                                   "temperature": 0})
            return r.status_code
        return await asyncio.gather(*(one(i) for i in range(n)))


def _assert_no_overspend(env: Env, account_id: int, start: int, codes: list[int]) -> None:
    acc = env.account(account_id)
    ledger = env.ledger(account_id)
    assert acc.reserved_micros == 0 and acc.credit_micros >= 0
    assert sum(e.amount_micros for e in ledger) == acc.credit_micros  # ledger = balance change
    charges = [e for e in ledger if e.kind == "charge"]
    assert len(charges) == codes.count(200) and set(codes) <= {200, 402}
    assert codes.count(402) > 0 and codes.count(200) > 0
    assert start + sum(e.amount_micros for e in charges) == acc.credit_micros


def test_200_concurrent_requests_never_overspend(env: Env, server: Server) -> None:
    # worst case: (prompt + 2 tokens) -> a few micro-units; the credit covers only some
    key, info = env.key(credit_micros=300, rpm=10_000, tpm=10_000_000,
                        prices={"*": {"input": 1_000_000, "output": 2_000_000}})
    codes = asyncio.run(_burst([server.url], key, 200, 2))
    _assert_no_overspend(env, info.account_id, 300, codes)


def test_two_replicas_share_the_database(env: Env, server: Server) -> None:
    second = env.server("replica")
    key, info = env.key(credit_micros=300, rpm=10_000, tpm=10_000_000,
                        prices={"*": {"input": 1_000_000, "output": 2_000_000}})
    codes = asyncio.run(_burst([server.url, second.url], key, 200, 2))
    _assert_no_overspend(env, info.account_id, 300, codes)
    # a key revoked through replica one's database is refused on replica two at once
    live, linfo = env.key(credit_micros=10_000_000)
    assert client(second, live).completions.create(model=MODEL, prompt="a", max_tokens=1)
    with env.sessions.begin() as s:
        keys.revoke(s, linfo.id)
    with pytest.raises(openai.AuthenticationError):
        client(second, live).completions.create(model=MODEL, prompt="a", max_tokens=1)
    second.stop()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from run_mock_upstream(tmp_path_factory.mktemp("upstream"))


def test_vllm_engine_kill9_mid_stream_bills_once(env: Env, upstream: str) -> None:
    extra = {"AVOKIT_ENGINE": "vllm", "AVOKIT_UPSTREAM": upstream}
    srv = env.server("vllm-a", **extra)
    key, info = env.key(credit_micros=10_000_000)
    c = client(srv, key)
    # error after the stream started arrives as an SSE error event
    with pytest.raises(openai.APIError):
        list(c.completions.create(model=MODEL, prompt="x", max_tokens=13, stream=True))
    stream = c.completions.create(model=MODEL, prompt="Hello", max_tokens=40, stream=True)
    got = 0
    for chunk in stream:
        got += 1 if chunk.choices and chunk.choices[0].text else 0
        if got == 8:
            break
    time.sleep(0.2)
    srv.kill9()
    with env.sessions() as s:
        open_res = list(s.scalars(select(Reservation).where(Reservation.key_id == info.id,
                                                            Reservation.status == "open")))
    assert len(open_res) == 1 and open_res[0].delivered_tokens >= 8
    delivered = open_res[0].delivered_tokens
    time.sleep(0.6)  # older than the stale threshold: the restarted server settles it
    env.server("vllm-b", **extra).stop()
    # a second reconciliation (another restart, another replica) must not bill it again
    from avokit.gateway.services import metering
    assert metering.reconcile(env.engine, 0.0) == 0
    with env.sessions() as s:
        res = s.get(Reservation, open_res[0].id)
        assert res is not None and res.status == "settled"
        n = s.scalar(select(func.count()).select_from(LedgerEntry)
                     .where(LedgerEntry.reservation_id == res.id))
        charge = s.scalars(select(LedgerEntry).where(LedgerEntry.reservation_id == res.id)).one()
    assert n == 1 and charge.completion_tokens == delivered
    acc = env.account(info.account_id)
    assert acc.reserved_micros == 0
    assert acc.credit_micros == sum(e.amount_micros for e in env.ledger(info.account_id))


def test_key_never_logged(env: Env, server: Server) -> None:
    key, _ = env.key(credit_micros=10)
    # a key in the query string would land in the access log; the filter must redact it
    httpx.get(server.url + f"/v1/models?api_key={key}", headers={"Authorization": f"Bearer {key}"})
    httpx.post(server.url + "/v1/completions", headers={"Authorization": f"Bearer {key}x"},
               json={"model": MODEL, "prompt": key, "max_tokens": 1})
    time.sleep(0.3)
    assert key not in env.logs() and key[:20] not in env.logs()
