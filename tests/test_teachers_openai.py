"""OpenAI-compatible backend against a local fake vLLM that serves REAL prompt log-probs
from a tiny model (the HTTP server is the boundary we do not own)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from avokit.errors import AvokitError
from avokit.recipe.teachers import TeacherConfig
from avokit.teachers import HFTeacher, load_teacher
from avokit.teachers.openai_backend import OpenAITeacher
from avokit.teachers.scoring import EMPTY_TOPK_LOGMASS, topk_boundary_logmass, word_start_mask

DOCS = [
    "Hello there, general Kenobi.\nA naïve café in 東京 serves 🍣.",
    ("A document long enough to need several rolling windows of sixteen tokens each, with "
     "numbers 31415 and 27182 and plenty of ordinary words after them."),
]
MAX_LEN = 16
TOP_K = 6


@dataclass
class FakeVLLM:
    """What the fake server does and what it saw."""

    model: Any
    prompt_logprobs: bool = True  # False: behaves like a server without vLLM's extension
    fail_next: int = 0  # answer this many requests with 503 first
    auth: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokenizer: Any = None  # for generation requests
    generations: list[dict[str, Any]] = field(default_factory=list)  # their bodies

    def generate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A sampling request, answered like vLLM would: the model samples with the seed."""
        self.generations.append(body)
        ids = torch.tensor([body["prompt"]])
        with self.lock, torch.no_grad():
            torch.manual_seed(body["seed"])
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                      temperature=body["temperature"], top_p=body["top_p"],
                                      max_new_tokens=body["max_tokens"], num_return_sequences=body["n"],
                                      pad_token_id=self.tokenizer.eos_token_id)
        return 200, {"choices": [{"text": self.tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True,
                                                                clean_up_tokenization_spaces=False)} for row in out]}

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "n" in body:
            return self.generate(body)
        prompt: list[int] = body["prompt"]
        with self.lock, torch.no_grad():
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, {"error": {"message": "busy"}}
            lp = torch.log_softmax(self.model(torch.tensor([prompt])).logits[0].float(), -1)
        if "prompt_logprobs" in body and self.prompt_logprobs:
            k = int(body["prompt_logprobs"])
            positions: list[Any] = [None]
            for j in range(1, len(prompt)):
                row = lp[j - 1]
                vals, ids = row.topk(k)
                entry = {str(int(i)): {"logprob": float(v), "rank": r + 1}
                         for r, (v, i) in enumerate(zip(vals, ids))}
                entry.setdefault(str(prompt[j]), {"logprob": float(row[prompt[j]]), "rank": 99})
                positions.append(entry)
            return 200, {"choices": [{"text": "x", "prompt_logprobs": positions}]}
        if body.get("echo") and body.get("return_tokens_as_token_ids"):
            k = int(body["logprobs"])
            tokens = [f"token_id:{t}" for t in prompt]
            gold: list[Any] = [None] + [float(lp[j - 1, prompt[j]]) for j in range(1, len(prompt))]
            tops: list[Any] = [None]
            for j in range(1, len(prompt)):
                vals, ids = lp[j - 1].topk(k)
                tops.append({f"token_id:{int(i)}": float(v) for v, i in zip(vals, ids)})
            return 200, {"choices": [{"text": "x", "logprobs": {
                "tokens": tokens + ["token_id:0"], "token_logprobs": gold + [-1.0],
                "top_logprobs": tops + [{"token_id:0": -1.0}]}}]}
        return 400, {"error": {"message": "unsupported request"}}


@pytest.fixture(scope="module")
def hf_teacher(tiny_llama_dir: Path) -> HFTeacher:
    return HFTeacher.from_dir(tiny_llama_dir, name="tiny", device="cpu", max_length=MAX_LEN,
                              batch_size=4, vocab_chunk=64)


@pytest.fixture()
def server(hf_teacher: HFTeacher) -> Iterator[tuple[str, FakeVLLM]]:
    fake = FakeVLLM(model=hf_teacher.model, tokenizer=hf_teacher.tokenizer)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            fake.auth.append(self.headers.get("Authorization"))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, payload = (fake.answer(body) if self.path == "/v1/completions"
                               else (404, {"error": {"message": "no route"}}))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", fake
    httpd.shutdown()
    httpd.server_close()


def make_teacher(url: str, hf: HFTeacher, **kwargs: Any) -> OpenAITeacher:
    # a prompt carries its last target too: max_length + 1 prompt tokens = the same windows
    return OpenAITeacher(url, "tiny", hf.tokenizer, name="tiny-api", max_length=MAX_LEN + 1,
                         backoff_s=0.01, **kwargs)


def assert_same_as_hf(api: OpenAITeacher, hf: HFTeacher) -> None:
    ids = [f"d{i}" for i in range(len(DOCS))]
    got, want = api.score(DOCS, ids, TOP_K), hf.score(DOCS, ids, TOP_K)
    mask = word_start_mask(hf.token_bytes, hf.token_bytes.size)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.token_ids, w.token_ids)
        np.testing.assert_array_equal(g.byte_ends, w.byte_ends)
        np.testing.assert_array_equal(g.topk_ids, w.topk_ids)
        np.testing.assert_allclose(g.topk_logprobs, w.topk_logprobs, atol=2e-4)
        np.testing.assert_allclose(g.gold_logprob, w.gold_logprob, atol=2e-4)
        approx = topk_boundary_logmass(w.topk_ids, w.topk_logprobs, mask)
        np.testing.assert_allclose(g.boundary_logmass, approx, atol=2e-4)
        assert np.all(g.boundary_logmass <= w.boundary_logmass + 1e-4)  # a lower bound


def test_prompt_logprobs_equal_hf(server: tuple[str, FakeVLLM], hf_teacher: HFTeacher) -> None:
    url, fake = server
    api = make_teacher(url, hf_teacher, api_key="sk-secret")
    assert api.info.boundary_mass == "topk" and api.info.backend == "openai"
    assert api.info.tokenizer_fingerprint == hf_teacher.info.tokenizer_fingerprint
    assert_same_as_hf(api, hf_teacher)
    assert api.mode == "prompt_logprobs"
    assert set(fake.auth) == {"Bearer sk-secret"}


def test_echo_fallback_equal_hf(server: tuple[str, FakeVLLM], hf_teacher: HFTeacher) -> None:
    url, fake = server
    fake.prompt_logprobs = False
    api = make_teacher(url, hf_teacher)
    assert_same_as_hf(api, hf_teacher)
    assert api.mode == "echo"
    assert set(fake.auth) == {None}


def test_retries_then_succeeds(server: tuple[str, FakeVLLM], hf_teacher: HFTeacher) -> None:
    url, fake = server
    fake.fail_next = 2
    api = make_teacher(url, hf_teacher, max_retries=3)
    rec = api.score(["Hello there."], ["a"], TOP_K)[0]
    assert rec.n_positions > 0 and fake.fail_next == 0


def test_prefix_cuts_need_the_full_distribution(server: tuple[str, FakeVLLM], hf_teacher: HFTeacher) -> None:
    url, fake = server
    api = make_teacher(url, hf_teacher)
    with pytest.raises(AvokitError, match="capture.inside_top_k=4 needs the full"):
        api.score(["Hello there."], ["a"], TOP_K, inside_top_k=4)


def test_failure_names_url_not_key(server: tuple[str, FakeVLLM], hf_teacher: HFTeacher) -> None:
    url, fake = server
    fake.fail_next = 100
    api = make_teacher(url, hf_teacher, api_key="sk-secret", max_retries=1)
    with pytest.raises(AvokitError, match="503") as err:
        api.score(["Hello"], ["a"], TOP_K)
    assert f"{url}/completions" in str(err.value) and "sk-secret" not in str(err.value)
    dead = make_teacher("http://127.0.0.1:9/v1", hf_teacher, api_key="sk-secret",
                        max_retries=1, timeout_s=2.0)
    with pytest.raises(AvokitError, match="127.0.0.1:9/v1/completions") as err:
        dead.score(["Hello"], ["a"], TOP_K)
    assert "sk-secret" not in str(err.value)


def test_load_teacher_openai(server: tuple[str, FakeVLLM], hf_teacher: HFTeacher,
                             tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, fake = server
    monkeypatch.setenv("TINY_KEY", "sk-from-env")
    cfg = TeacherConfig(name="api", kind="openai", base_url=url, model="tiny",
                        tokenizer=tiny_llama_dir, api_key_env="TINY_KEY")
    teacher = load_teacher(cfg, tiny_llama_dir)
    rec = teacher.score(["Hello there."], ["a"], TOP_K)[0]
    assert rec.k == TOP_K and fake.auth[-1] == "Bearer sk-from-env"
    teacher.close()


def test_topk_boundary_approximation() -> None:
    mask = np.array([True, False, True, False])
    ids = np.array([[1, 3], [0, 2], [1, 0]])
    lps = np.log(np.array([[0.5, 0.2], [0.3, 0.1], [0.6, 0.1]]))
    got = topk_boundary_logmass(ids, lps, mask)
    np.testing.assert_allclose(got, [EMPTY_TOPK_LOGMASS, np.log(0.4), np.log(0.1)], rtol=1e-6)


def test_base_url_from_environment(server: tuple[str, FakeVLLM], tiny_llama_dir: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url, fake = server
    cfg = TeacherConfig(name="api", kind="openai", model="tiny", tokenizer=tiny_llama_dir,
                        base_url_env="TINY_BASE_URL", api_key_env="TINY_KEY")
    monkeypatch.delenv("TINY_BASE_URL", raising=False)
    with pytest.raises(AvokitError, match=r"needs `base_url` in the recipe or \$TINY_BASE_URL"):
        load_teacher(cfg, tiny_llama_dir)
    monkeypatch.setenv("TINY_BASE_URL", url)
    monkeypatch.setenv("TINY_KEY", "sk-env")
    teacher = load_teacher(cfg, tiny_llama_dir)
    assert teacher.score(["Hello there."], ["a"], TOP_K)[0].k == TOP_K
    assert fake.auth[-1] == "Bearer sk-env"
    teacher.close()
    # a base_url in the recipe wins over the environment
    monkeypatch.setenv("TINY_BASE_URL", "http://127.0.0.1:9/v1")
    assert cfg.model_copy(update={"base_url": url}).endpoint_url() == url


def test_endpoint_generation_equals_the_same_model_in_process(server: tuple[str, FakeVLLM],
                                                              hf_teacher: HFTeacher) -> None:
    """``generate`` sends the prompt as the teacher's token ids (its chat template when asked),
    with n, seed and sampling settings, and returns the choices' text."""
    from avokit.teachers.base import Sampling

    url, fake = server
    api = make_teacher(url, hf_teacher)
    sampling = Sampling(max_new_tokens=6, temperature=0.8, top_p=0.9)
    for chat in (False, True):
        got = api.generate("Tell me about cats.", sampling, n=3, seed=11, chat=chat)
        assert got == hf_teacher.generate("Tell me about cats.", sampling, n=3, seed=11, chat=chat)
        body = fake.generations[-1]
        assert body["prompt"] == hf_teacher.prompt_ids("Tell me about cats.", chat)
        assert (body["n"], body["seed"], body["max_tokens"], body["temperature"], body["top_p"]) == (3, 11, 6, 0.8, 0.9)
    assert fake.generations[0]["prompt"][0] == api.start_token_id  # plain prompts start like scoring windows
    assert len(set(got)) > 1  # sampled, not n copies
