"""OpenAI-compatible endpoint backend (vLLM): prompt log-probs for locally tokenized text.

Documents are tokenized here and sent as token-id prompts, so byte offsets are exact. Two
response shapes are understood: vLLM's ``prompt_logprobs`` extra parameter (per-position
``{id: {"logprob", "rank"}}``), and ``/v1/completions`` with ``echo`` + ``logprobs`` and
``return_tokens_as_token_ids`` (keys ``"token_id:N"``). ``mode="auto"`` tries the first and
falls back to the second. Endpoints return only top-k, so ``boundary_logmass`` is the top-k
approximation of :func:`avokit.teachers.scoring.topk_boundary_logmass` and
``TeacherInfo.boundary_mass == "topk"``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

from avokit.align.bytes import byteify
from avokit.errors import AvokitError
from avokit.records import TeacherRecords
from avokit.teachers.base import Sampling, TeacherInfo, TokenizerTeacher
from avokit.teachers.fingerprint import endpoint_fingerprint, tokenizer_fingerprint
from avokit.teachers.scoring import (
    Window,
    plan_windows,
    resolve_start_token_id,
    topk_boundary_logmass,
    word_start_mask,
)

Mode = Literal["auto", "prompt_logprobs", "echo"]
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def load_local_tokenizer(path: Path) -> Any:
    """A tokenizer from a directory (``AutoTokenizer``) or a ``tokenizer.json`` file."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if path.is_dir():
        return AutoTokenizer.from_pretrained(path)
    if path.is_file() and path.suffix == ".json":
        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    raise AvokitError(f"tokenizer {path} is neither a tokenizer directory nor a tokenizer.json")


class OpenAITeacher(TokenizerTeacher):
    """A teacher behind an OpenAI-compatible ``/v1/completions`` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: Any,
        *,
        name: str,
        api_key: str | None = None,
        license: str = "unknown",
        start_token: str | None = None,
        max_length: int = 512,
        mode: Mode = "auto",
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        concurrency: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Connect lazily; ``api_key`` is sent as a bearer token and never logged."""
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self.mode: Mode = mode
        self.max_length = max_length
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.start_token_id = resolve_start_token_id(tokenizer, start_token)
        self._tb = byteify(tokenizer, name=name)
        self._word_mask = word_start_mask(self._tb, self._tb.size)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers,
                                    timeout=timeout_s, transport=transport)
        self._info = TeacherInfo(
            name=name, backend="openai", vocab_size=self._tb.size,
            tokenizer_kind=self._tb.family, license=license, params=None,
            fingerprint=endpoint_fingerprint(self.base_url, model, self._tb),
            tokenizer_fingerprint=tokenizer_fingerprint(self._tb), boundary_mass="topk",
            dtype="endpoint",
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # -- HTTP -------------------------------------------------------------------------

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        """POST /completions with retries and exponential backoff on transient failures."""
        url = f"{self.base_url}/completions"
        detail = ""
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._client.post("/completions", json=body)
            except httpx.HTTPError as err:  # connection refused, timeouts, protocol errors
                detail = f"{type(err).__name__}: {err}"
            else:
                if resp.status_code < 400 or resp.status_code not in RETRY_STATUS:
                    return resp
                detail = f"HTTP {resp.status_code}: {resp.text[:300]}"
            if attempt < self.max_retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise AvokitError(
            f"teacher {self.info.name!r}: POST {url} failed after {self.max_retries + 1} "
            f"attempts: {detail}"
        )

    def _request(self, prompt: list[int], top_k: int) -> list[dict[int, float]]:
        """Per prompt position (from 1): {token id: log-prob} for top-k plus the prompt token."""
        base = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0}
        url = f"{self.base_url}/completions"
        if self.mode in ("auto", "prompt_logprobs"):
            resp = self._post({**base, "prompt_logprobs": top_k})
            if resp.status_code < 400:
                choice = _first_choice(resp, url)
                if choice.get("prompt_logprobs") is not None:
                    self.mode = "prompt_logprobs"
                    return _parse_prompt_logprobs(choice["prompt_logprobs"], len(prompt), url)
            if self.mode == "prompt_logprobs":
                raise AvokitError(f"{url} gave no prompt_logprobs (HTTP {resp.status_code}): "
                                  f"{resp.text[:300]}")
        resp = self._post({**base, "echo": True, "logprobs": top_k,
                           "return_tokens_as_token_ids": True})
        if resp.status_code >= 400:
            raise AvokitError(f"{url} rejected the echo+logprobs request (HTTP "
                              f"{resp.status_code}): {resp.text[:300]}")
        self.mode = "echo"
        return _parse_echo(_first_choice(resp, url), len(prompt), url)

    def generate(self, prompt: str, sampling: Sampling, *, n: int, seed: int, chat: bool = False) -> list[str]:
        """``n`` samples from the endpoint (``/completions`` with token-id prompts and a seed)."""
        url = f"{self.base_url}/completions"
        resp = self._post({"model": self.model, "prompt": self.prompt_ids(prompt, chat), "n": n, "seed": seed,
                           "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                           "top_p": sampling.top_p})
        if resp.status_code >= 400:
            raise AvokitError(f"{url} rejected the generation request (HTTP {resp.status_code}): {resp.text[:300]}")
        try:
            texts = [str(c["text"]) for c in resp.json()["choices"]]
        except (ValueError, KeyError, TypeError) as err:
            raise AvokitError(f"{url}: a completion without choices[].text ({err})") from None
        if len(texts) != n:
            raise AvokitError(f"{url}: asked for {n} completions, got {len(texts)}")
        return texts

    # -- scoring ----------------------------------------------------------------------

    def _score_window(self, seq: np.ndarray, w: Window, top_k: int) -> tuple[np.ndarray, ...]:
        prompt = seq[w.a : w.b + 1].tolist()  # the window's inputs plus its last target
        positions = self._request(prompt, top_k)
        url = f"{self.base_url}/completions"
        n = w.b - w.a - w.first
        gold = np.zeros(n, np.float32)
        ids = np.zeros((n, top_k), np.int32)
        lps = np.zeros((n, top_k), np.float32)
        for row, j in enumerate(range(w.first + 1, w.b - w.a + 1)):
            entries = positions[j - 1]
            target = prompt[j]
            if target not in entries:
                raise AvokitError(f"{url} gave no log-prob for prompt token {target} at {j}")
            gold[row] = entries[target]
            ranked = sorted(entries.items(), key=lambda kv: -kv[1])[:top_k]
            if len(ranked) < top_k:
                raise AvokitError(f"{url} returned {len(ranked)} alternatives at prompt "
                                  f"position {j}, fewer than top_k={top_k}")
            ids[row] = [i for i, _ in ranked]
            lps[row] = [lp for _, lp in ranked]
        return gold, ids, lps

    def score(self, texts: list[str], doc_ids: list[str], top_k: int, *,
              inside_top_k: int = 0) -> list[TeacherRecords]:
        """Records for each document; windows of ``max_length`` prompt tokens, in parallel."""
        if len(texts) != len(doc_ids):
            raise AvokitError(f"score: {len(texts)} texts but {len(doc_ids)} doc_ids")
        if inside_top_k:
            raise AvokitError(
                f"teacher {self.info.name!r}: capture.inside_top_k={inside_top_k} needs the full "
                "next-token distribution, and an endpoint returns only its top logprobs; set "
                "capture.inside_top_k: 0 for this teacher's recipe, or score it from weights (hf/gguf)")
        docs = self.tokenize(texts)
        seqs = [np.concatenate([[self.start_token_id], d.ids]).astype(np.int64) for d in docs]
        # a prompt carries its last target too, so inputs are max_length - 1 long
        windows = [w for i, d in enumerate(docs)
                   for w in plan_windows(i, len(d.ids), self.max_length - 1)]
        if windows and self.mode == "auto":  # settle the response shape once, serially
            first = [self._score_window(seqs[windows[0].doc], windows[0], top_k)]
            rest = windows[1:]
        else:
            first, rest = [], windows
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            results = first + list(pool.map(lambda w: self._score_window(seqs[w.doc], w, top_k),
                                            rest))
        out = [(np.zeros(len(d.ids), np.float32), np.zeros((len(d.ids), top_k), np.int32),
                np.zeros((len(d.ids), top_k), np.float32)) for d in docs]
        for w, (g, i_, l_) in zip(windows, results):
            dst = slice(w.a + w.first, w.b)
            out[w.doc][0][dst], out[w.doc][1][dst], out[w.doc][2][dst] = g, i_, l_
        return [
            TeacherRecords(doc_id=did, token_ids=d.ids.astype(np.int32),
                           byte_ends=d.byte_ends.astype(np.int64), gold_logprob=g, topk_ids=i_,
                           topk_logprobs=l_,
                           boundary_logmass=topk_boundary_logmass(i_, l_, self._word_mask))
            for did, d, (g, i_, l_) in zip(doc_ids, docs, out)
        ]


def _first_choice(resp: httpx.Response, url: str) -> dict[str, Any]:
    try:
        return resp.json()["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise AvokitError(f"{url} returned no completion choice: {resp.text[:300]}") from err


def _parse_prompt_logprobs(raw: list[Any], n: int, url: str) -> list[dict[int, float]]:
    """vLLM ``prompt_logprobs``: [None, {"id": {"logprob": x, ...}}, ...] -> positions 1..n-1."""
    if len(raw) < n:
        raise AvokitError(f"{url} returned prompt_logprobs for {len(raw)} of {n} prompt tokens")
    return [{int(k): float(v["logprob"] if isinstance(v, dict) else v) for k, v in pos.items()}
            for pos in raw[1:n]]


def _parse_echo(choice: dict[str, Any], n: int, url: str) -> list[dict[int, float]]:
    """``echo`` + ``logprobs`` with ``return_tokens_as_token_ids`` -> positions 1..n-1."""
    lp = choice.get("logprobs") or {}
    tokens, gold, tops = lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")
    if not tokens or gold is None or tops is None or len(tokens) < n:
        raise AvokitError(f"{url} did not echo prompt log-probs (needs echo + logprobs)")

    def tid(key: str) -> int:
        if not key.startswith("token_id:"):
            raise AvokitError(f"{url} returned token strings, not ids: the server must support "
                              "return_tokens_as_token_ids")
        return int(key[len("token_id:") :])

    out = []
    for j in range(1, n):
        entries = {tid(k): float(v) for k, v in (tops[j] or {}).items()}
        entries.setdefault(tid(tokens[j]), float(gold[j]))
        out.append(entries)
    return out
