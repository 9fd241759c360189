"""Tenant isolation: one customer's request can neither fail, nor change, nor get billed
for another's. The real app and the real batching engine on the tiny model, in process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import SECRET, InProcess, auth, build_registry, free_port

from avokit.gateway.engines.base import GenParams, scan_registry
from avokit.gateway.engines.transformers_engine import TransformersEngine
from avokit.gateway.errors import GatewayError
from avokit.gateway.settings import load_settings

MODEL = "avo-tiny"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    build_registry(root, MODEL)
    return root


def _settings(registry: Path, tmp: Path, **extra: Any) -> Any:
    # a long batch window: concurrent requests are sure to share one batched generation
    return load_settings(registry=registry, db_url=f"sqlite:///{tmp}/g.db", secret=SECRET,
                         batch_wait_ms=300.0, **extra)


def test_engine_one_bad_sequence_fails_alone(registry: Path) -> None:
    """A sequence the engine cannot sample (a seed torch cannot take) fails on its own; the
    sequences batched with it complete with exactly the output they have alone."""
    engine = TransformersEngine(scan_registry(registry), max_batch_size=8, batch_wait_ms=300)

    async def run() -> None:
        ids = list(engine.tokenizer(MODEL)("Hello world").input_ids)
        victim = GenParams(ids, 6, temperature=0.0)
        alone, _ = await engine.complete(MODEL, victim)
        poison = GenParams(ids, 6, temperature=1.0, seed=2**70)  # never passes the API
        together = await asyncio.gather(engine.complete(MODEL, victim),
                                        engine.complete(MODEL, poison),
                                        engine.complete(MODEL, victim), return_exceptions=True)
        assert isinstance(together[1], GatewayError)
        for result in (together[0], together[2]):
            assert not isinstance(result, BaseException), result
            events, fin = result
            assert [e.text for e in events] == [e.text for e in alone]
            assert fin.completion_tokens == 6
        await engine.aclose()

    asyncio.run(run())


def test_engine_no_head_of_line_blocking(registry: Path) -> None:
    """Continuous batching: requests that arrive while a long generation runs join it at the
    next step and finish long before it, each with exactly the output it has alone."""
    engine = TransformersEngine(scan_registry(registry), max_batch_size=4, batch_wait_ms=0)

    async def run() -> None:
        tok = engine.tokenizer(MODEL)
        prompts = ["Hello world", "Avocados are green and", "A", "The quick brown fox jumps over"]
        solo = []
        for p in prompts:
            events, _ = await engine.complete(MODEL, GenParams(list(tok(p).input_ids), 10, temperature=0.0))
            solo.append("".join(e.text for e in events))
        finished: list[str] = []

        async def ask(name: str, prompt: str, n: int, delay: float) -> str:
            await asyncio.sleep(delay)
            events, fin = await engine.complete(MODEL, GenParams(list(tok(prompt).input_ids), n, temperature=0.0))
            finished.append(name)
            assert fin.completion_tokens == n
            return "".join(e.text for e in events)

        long = asyncio.create_task(ask("long", prompts[1], 600, 0.0))
        await asyncio.sleep(0.05)  # the long generation is running
        short = await asyncio.gather(*(ask(f"s{i}", p, 10, 0.01 * i) for i, p in enumerate(prompts)))
        assert short == solo  # joining a running batch (left-padded, merged cache) changes nothing
        assert not long.done() and "long" not in finished
        await long
        assert finished[-1] == "long"
        await engine.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("temperature,top_p", [(1e-300, 1.0), (5e-324, 1.0), (1e-30, 1.0),
                                               (1.0, 5e-324), (2.0, 1e-300)])
def test_engine_numeric_edges_are_greedy(registry: Path, temperature: float, top_p: float
                                         ) -> None:
    """temperature -> 0 samples like greedy; a tiny top_p keeps at least the top token."""
    engine = TransformersEngine(scan_registry(registry), max_batch_size=4, batch_wait_ms=0)

    async def run() -> None:
        ids = list(engine.tokenizer(MODEL)("Avocados are").input_ids)
        greedy, _ = await engine.complete(MODEL, GenParams(ids, 5, temperature=0.0))
        edge, fin = await engine.complete(MODEL, GenParams(ids, 5, temperature=temperature,
                                                           top_p=top_p, seed=3))
        assert "".join(e.text for e in edge) == "".join(e.text for e in greedy)
        assert fin.completion_tokens == 5
        await engine.aclose()

    asyncio.run(run())


POISON: list[dict[str, Any]] = [
    {"seed": 2**64}, {"seed": 2**63}, {"seed": -(2**63) - 1}, {"temperature": 1e-300},
    {"temperature": 5e-324}, {"top_p": 5e-324}, {"top_p": 1e-300, "temperature": 2.0},
    {"temperature": 1e-300, "top_p": 1e-300, "seed": -1},
]


def test_poisoned_requests_do_not_touch_concurrent_tenants(registry: Path, tmp_path: Path
                                                           ) -> None:
    """Edge-case sampling parameters sent by one customer, batched with another's requests:
    the victims' answers are exactly their solo answers and billed once each; every poison
    request gets a 200 or an OpenAI-shaped 400 (never a 5xx), and no refused one is billed."""
    body = {"model": MODEL, "prompt": "Hello world", "max_tokens": 6, "temperature": 0}

    async def run() -> None:
        async with InProcess(_settings(registry, tmp_path)) as gw:
            victim, vinfo = gw.key(credit_micros=10_000_000)
            attacker, ainfo = gw.key(credit_micros=10_000_000)
            solo = (await gw.http.post("/v1/completions", json=body, headers=auth(victim)))
            assert solo.status_code == 200
            reqs = [gw.http.post("/v1/completions", json=body, headers=auth(victim))
                    for _ in range(2)]
            reqs += [gw.http.post("/v1/completions", json={**body, **p, "temperature":
                                  p.get("temperature", 1.0)}, headers=auth(attacker))
                     for p in POISON]
            out = await asyncio.gather(*reqs)
            for r in out[:2]:
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["text"] == solo.json()["choices"][0]["text"]
            for p, r in zip(POISON, out[2:]):
                assert r.status_code in (200, 400), (p, r.status_code, r.text)
                if r.status_code == 400:
                    assert r.json()["error"]["param"] in p, (p, r.text)
            credit, reserved, ledger = gw.account(vinfo.account_id)
            assert reserved == 0 and credit == ledger and len(gw.charges(vinfo.account_id)) == 3
            credit, reserved, ledger = gw.account(ainfo.account_id)
            served = sum(r.status_code == 200 for r in out[2:])
            assert reserved == 0 and credit == ledger
            assert len(gw.charges(ainfo.account_id)) == served

    asyncio.run(run())


@pytest.mark.parametrize("stream", [False, True])
def test_failed_generation_is_not_billed(registry: Path, tmp_path: Path, stream: bool) -> None:
    """The engine fails (its upstream is down): the client gets an OpenAI-shaped error, the
    reservation is released and nothing is charged, not even the prompt."""
    from avokit.gateway.engines.vllm import VLLMEngine

    settings = _settings(registry, tmp_path)
    dead = VLLMEngine(scan_registry(registry), f"http://127.0.0.1:{free_port()}")

    async def run() -> None:
        async with InProcess(settings, engine=dead) as gw:
            key, info = gw.key(credit_micros=10_000_000)
            r = await gw.http.post("/v1/chat/completions", headers=auth(key), json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4, "stream": stream})
            if stream:
                assert r.status_code == 200 and '"error"' in r.text
            else:
                assert r.status_code == 502 and r.json()["error"]["type"] == "server_error"
            assert gw.charges(info.account_id) == []
            assert gw.account(info.account_id) == (10_000_000, 0, 10_000_000)

    asyncio.run(run())
