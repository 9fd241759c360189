"""Property-based fuzzing of the real app and engine (hypothesis), bounded for CI: 100
examples, about 50 s of CPU on the 2-core machine.

Random request bodies, valid and invalid (wrong types, out-of-range and edge-case numbers,
lone surrogates, unknown fields, raw bytes that are not JSON), go through the real app and
the real batching engine on the tiny model, each one concurrently with a fixed "victim"
request of another tenant. For every example:

* never a 5xx, and every error is OpenAI-shaped;
* the victim's answer is exactly its solo answer (no tenant changes another's output);
* money: each account's credit equals its ledger sum, nothing stays reserved, no balance goes
  negative, and every charge belongs to a request that was answered 200.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import SECRET, InProcess, auth, build_registry

from avokit.gateway.settings import load_settings

MODEL = "avo-tiny"
VICTIM = {"model": MODEL, "prompt": "Avocados are green", "max_tokens": 4, "temperature": 0}
T = TypeVar("T")


class Harness:
    """One in-process gateway on its own event loop thread, shared by every example."""

    def __init__(self, registry: Path, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gw = InProcess(load_settings(registry=registry, db_url=f"sqlite:///{tmp}/g.db",
                                          secret=SECRET, batch_wait_ms=20.0,
                                          max_body_bytes=64_000))
        self.run(self.gw.__aenter__())
        self.victim, self.victim_info = self.gw.key(credit_micros=10**12, rpm=10**6,
                                                    tpm=10**9)
        self.fuzzer, self.fuzz_info = self.gw.key(credit_micros=10**9, rpm=10**6, tpm=10**9)
        self.eval_key, self.eval_info = self.gw.key(scope="eval", credit_micros=10**9,
                                                    rpm=10**6, tpm=10**9)
        self.poor, self.poor_info = self.gw.key(credit_micros=40, rpm=10**6, tpm=10**9)
        solo = self.run(self.gw.http.post("/v1/completions", json=VICTIM,
                                          headers=auth(self.victim)))
        assert solo.status_code == 200, solo.text
        self.victim_text = solo.json()["choices"][0]["text"]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=300)

    def close(self) -> None:
        self.run(self.gw.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("registry")
    build_registry(root, MODEL)
    h = Harness(root, tmp_path_factory.mktemp("fuzz"))
    yield h
    h.close()


# text including lone surrogates (hypothesis leaves them out of text() on its own)
texts = st.lists(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr),
                           st.sampled_from(["<|user|>", "<|end|>", "\x00", " "])),
                 max_size=30).map("".join)
edge_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 5e-324, 1e-300, 1e-30, 1e-6, 0.5, 1.0, 2.0, 2.0000001, -0.0, -1e-9]))
edge_ints = st.one_of(
    st.integers(min_value=-5, max_value=12),
    st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, 2**64 - 1, -(2**63), -(2**63) - 1,
                     10**30, -(10**30)]))
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), edge_floats, texts)
json_any = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)), max_leaves=8)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool", "root"]),
     "content": st.one_of(texts, st.lists(st.fixed_dictionaries(
         {"type": st.sampled_from(["text", "image_url"]), "text": texts}), max_size=2),
         json_any)}), min_size=0, max_size=3)
common: dict[str, Any] = {
    "model": st.one_of(st.just(MODEL), texts),
    "max_tokens": st.one_of(st.integers(0, 6), edge_ints, json_any),
    "temperature": st.one_of(edge_floats, json_any),
    "top_p": edge_floats,
    "seed": st.one_of(edge_ints, st.integers()),
    "stop": st.one_of(texts, st.lists(texts, max_size=6), json_any),
    "stream": st.booleans(),
    "stream_options": st.one_of(st.just({"include_usage": True}), json_any),
    "n": edge_ints,
    "user": texts,
    "logit_bias": st.dictionaries(st.one_of(texts, st.integers(0, 500).map(str)),
                                  edge_floats, max_size=2),
    "frequency_penalty": edge_floats,
    "unknown_field": json_any,
}
completion_fields = {**common,
                     "prompt": st.one_of(texts, st.lists(texts, max_size=2),
                                         st.lists(edge_ints, max_size=4), json_any),
                     "echo": st.booleans(), "logprobs": st.one_of(edge_ints, st.none()),
                     "suffix": texts, "best_of": edge_ints}
chat_fields = {**common, "messages": messages, "logprobs": st.booleans(),
               "top_logprobs": edge_ints, "max_completion_tokens": edge_ints}
# the fields every body has (mostly valid), then any subset of the others
_base = {"model": st.just(MODEL), "max_tokens": st.integers(0, 6)}


def _bodies(fields: dict[str, Any], required: dict[str, Any]) -> st.SearchStrategy[Any]:
    optional = {k: v for k, v in fields.items() if k not in _base and k not in required}
    return st.fixed_dictionaries({**_base, **required}, optional=optional)


requests = st.one_of(
    st.tuples(st.just("/v1/completions"),
              _bodies(completion_fields, {"prompt": st.one_of(texts, st.just("Hello"))})),
    st.tuples(st.just("/v1/chat/completions"),
              _bodies(chat_fields, {"messages": messages})),
    st.tuples(st.sampled_from(["/v1/completions", "/v1/chat/completions"]), json_any),
    st.tuples(st.sampled_from(["/v1/completions", "/v1/chat/completions"]),
              st.binary(max_size=60)))


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    # allow_nan: Python's JSON (and so the server's parser) reads NaN and Infinity
    return json.dumps(body).encode()


def _check_response(status: int, text: str, stream: bool) -> None:
    assert status < 500, (status, text[:500])
    if status >= 400:
        body = json.loads(text)
        assert set(body) == {"error"}, text[:300]
        assert set(body["error"]) == {"message", "type", "param", "code"}, text[:300]
    elif stream:
        assert '"error"' not in text and text.rstrip().endswith("data: [DONE]"), text[-300:]
    else:
        usage = json.loads(text)["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def _exchange(h: Harness, key: str, path: str, body: Any
                    ) -> tuple[tuple[int, str], tuple[int, str]]:
    async def victim() -> tuple[int, str]:
        r = await h.gw.http.post("/v1/completions", json=VICTIM, headers=auth(h.victim))
        return r.status_code, r.text

    async def fuzz() -> tuple[int, str]:
        r = await h.gw.http.post(path, content=_encode(body), headers={
            **auth(key), "content-type": "application/json"})
        return r.status_code, r.text

    v, f = await asyncio.gather(victim(), fuzz())
    return v, f


def _assert_money(h: Harness, before: dict[int, int], answered: dict[int, int]) -> None:
    """Balances add up, nothing stays held, and each account got one charge per 200."""
    for info in (h.victim_info, h.fuzz_info, h.eval_info, h.poor_info):
        credit, reserved, ledger = h.gw.account(info.account_id)
        assert reserved == 0 and credit == ledger and credit >= 0, (credit, reserved, ledger)
        new_charges = len(h.gw.charges(info.account_id)) - before[info.account_id]
        assert new_charges == answered.get(info.account_id, 0), info.name


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(request=requests, who=st.sampled_from(["fuzzer", "eval", "poor"]))
def test_no_request_crashes_harms_or_goes_unbilled(harness: Harness,
                                                    request: tuple[str, Any], who: str) -> None:
    path, body = request
    key, info = {"fuzzer": (harness.fuzzer, harness.fuzz_info),
                 "eval": (harness.eval_key, harness.eval_info),
                 "poor": (harness.poor, harness.poor_info)}[who]
    accounts = (harness.victim_info, harness.fuzz_info, harness.eval_info, harness.poor_info)
    before = {a.account_id: len(harness.gw.charges(a.account_id)) for a in accounts}
    (v_status, v_text), (f_status, f_text) = harness.run(_exchange(harness, key, path, body))
    stream = isinstance(body, dict) and body.get("stream") is True
    _check_response(f_status, f_text, stream)
    assert v_status == 200, v_text
    assert json.loads(v_text)["choices"][0]["text"] == harness.victim_text
    answered = {harness.victim_info.account_id: 1}
    answered[info.account_id] = answered.get(info.account_id, 0) + (f_status == 200)
    _assert_money(harness, before, answered)
