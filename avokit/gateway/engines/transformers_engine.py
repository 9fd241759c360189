"""In-process transformers generation with continuous batching (the CPU-friendly default).

One worker thread per model decodes a running batch step by step with a KV cache
(:mod:`avokit.gateway.engines.kv_batch`). Between two steps, finished rows leave and requests
that have arrived join (prefilled on their own, up to ``max_batch_size`` rows; an idle worker
first waits ``batch_wait_ms`` for company), so a request never waits for another's whole
generation. Each request's tokens are pushed to its own asyncio queue as they are sampled, so
batched requests still stream independently. A cancelled request (client gone) stops
receiving events and leaves the batch at the next step.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from avokit.gateway.engines import constrained
from avokit.gateway.engines.base import (
    Finished,
    GenParams,
    PromptScores,
    ServedModel,
    TokenEvent,
    collect,
    load_tokenizer,
)
from avokit.gateway.engines.kv_batch import DecodeBatch, Masker, decode_step, merge, prefill
from avokit.gateway.errors import NotFoundError, UpstreamError


@dataclass
class _Job:
    params: GenParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: Any) -> None:
        if not self.cancelled.is_set():
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)


@dataclass
class _Row:
    job: _Job
    ids: list[int] = field(default_factory=list)
    text: str = ""
    done: bool = False
    gen: Any = None  # the request's torch.Generator (seeded requests)
    matcher: Any = None  # the request's grammar state (constrained requests)


class _ModelWorker:
    """Owns one model; runs batches on its own thread."""

    def __init__(self, served: ServedModel, device: str, max_batch: int, wait_ms: float,
                 dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from avokit.precision import resolve_dtype, torch_dtype

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.torch = torch
        self.tokenizer = load_tokenizer(served.path)
        self.dtype = resolve_dtype(dtype, device, field="AVOKIT_DTYPE")
        model: Any = AutoModelForCausalLM.from_pretrained(str(served.path), dtype=torch_dtype(self.dtype))
        self.model = model.to(device).eval()
        self.device = device
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.eos = set(_eos_ids(self.model, self.tokenizer))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos) if self.eos else 0)
        self.masks: constrained.TokenMasks | None = None  # the bitmask buffer, made on first use
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.lock = threading.Lock()  # scoring and batches share the model
        self.thread = threading.Thread(target=self._run, name=f"avokit-gen-{served.name}",
                                       daemon=True)
        self.thread.start()

    def _take(self, wait: bool, limit: int) -> list[_Job] | None:
        """Up to ``limit`` new jobs: when ``wait`` (nothing running) block for the first, then
        gather those arriving within the batch window; else only those already queued.
        None: shut down."""
        jobs: list[_Job] = []
        try:
            if wait:
                first = self.jobs.get()
                if first is None:
                    return None
                jobs.append(first)
            while len(jobs) < limit:
                nxt = self.jobs.get(timeout=self.wait_s) if wait and self.wait_s else self.jobs.get_nowait()
                if nxt is None:
                    self.jobs.put(None)  # seen again once the running rows are served
                    break
                jobs.append(nxt)
        except queue.Empty:
            pass
        return [j for j in jobs if not j.cancelled.is_set()]

    def _run(self) -> None:
        """Continuous batching: between two decode steps finished rows leave and queued
        requests are prefilled and join, so nobody waits for another's whole generation."""
        batch: DecodeBatch | None = None
        while True:
            room = self.max_batch - (len(batch.rows) if batch else 0)
            jobs = self._take(batch is None, room) if room > 0 and (batch is None or batch.mergeable) else []
            if jobs is None:
                return
            try:
                with self.lock, self.torch.inference_mode():
                    if jobs:
                        joined = self._prefill(jobs)
                        batch = joined if batch is None else (merge(batch, joined) if joined else batch)
                    if batch is not None:
                        batch = decode_step(self.model, batch, self._sampler(batch.rows),
                                            self._masker(batch.rows))
            except Exception as err:  # the shared forward pass failed: keep the worker alive
                running = [r.job for r in batch.rows] if batch else []
                joining = [j for j in (jobs or []) if all(j is not r for r in running)]
                for job in running + joining:
                    job.emit(UpstreamError(f"generation failed: {type(err).__name__}"))
                batch = None

    def _prefill(self, jobs: list[_Job]) -> DecodeBatch | None:
        rows = []
        for job in jobs:
            row = _Row(job)
            try:
                row.gen = _generator(self.torch, job.params.seed)
                if job.params.constraint is not None:
                    row.matcher = constrained.start(job.params.constraint)
            except Exception as err:  # a seed torch refuses fails its own request only
                job.emit(UpstreamError(f"generation failed: {type(err).__name__}"))
                continue
            rows.append(row)
        if not rows:
            return None
        return prefill(self.model, rows, [r.job.params.prompt_ids for r in rows], self.pad_id,
                       self.device, self._sampler(rows), self._masker(rows))[0]

    def _masker(self, rows: list[_Row]) -> Masker:
        """Grammar masks for the constrained rows of a step; None (no mask work at all) when
        none is."""
        wanted = [(i, r) for i, r in enumerate(rows)
                  if r.matcher is not None and r.job.params.constraint is not None and not r.done]
        if not wanted:
            return None
        first = wanted[0][1].job.params.constraint
        assert first is not None  # the rows above all have one
        n_vocab = first.n_vocab  # one tokenizer per worker
        if self.masks is None or self.masks.n_vocab != n_vocab:
            self.masks = constrained.TokenMasks(n_vocab, self.max_batch)
        masks = self.masks

        def mask(logits: Any) -> None:
            for i in masks.mask_rows(logits, [(i, r.matcher) for i, r in wanted]):
                rows[i].done = True  # a broken grammar fails its own request only
                rows[i].job.emit(UpstreamError("generation failed: grammar error"))

        return mask

    def _sampler(self, rows: list[_Row]) -> Any:
        """``sample(i, logits)``: row i's next token, or None once the row is finished."""

        def sample(i: int, logits: Any) -> int | None:
            row = rows[i]
            if row.done:
                return None
            try:
                token = _sample(self.torch, logits, row.job.params, row.gen)
                self._advance(row, token, logits)
            except Exception as err:  # this sequence fails alone; the batch goes on
                row.done = True
                row.job.emit(UpstreamError(f"generation failed: {type(err).__name__}"))
            return None if row.done else token

        return sample

    def _advance(self, row: _Row, token: int, logits: Any) -> None:
        p = row.job.params
        if row.job.cancelled.is_set():
            row.done = True
            return
        if token in self.eos:
            row.done = True
            row.job.emit(Finished("stop", len(row.ids)))
            return
        if row.matcher is not None and not constrained.advance(row.matcher, token):
            raise ValueError("the grammar refused the sampled token")
        row.ids.append(token)
        full = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        finish: str | None = None
        for s in p.stop:
            cut = full.find(s, max(0, len(row.text) - len(s)))
            if s and cut >= 0:
                full, finish = full[:cut], "stop"
                break
        if row.matcher is not None and constrained.complete(row.matcher):
            finish = "stop"  # the grammar is complete: nothing more may follow
        if finish is None and len(row.ids) >= p.max_tokens:
            finish = "length"
        # hold back a partial multi-byte character until its bytes are complete
        delta = full[len(row.text):] if (finish or not full.endswith("\ufffd")) else ""
        event = TokenEvent(text=delta, tokens=1)
        if p.top_logprobs is not None:
            logprobs = self.torch.log_softmax(logits.float(), dim=-1)
            event.token_strs = [self.tokenizer.decode([token])]
            event.logprobs = [float(logprobs[token])]
            event.top_logprobs = [self._top(logprobs, p.top_logprobs)]
        row.text += delta
        row.job.emit(event)
        if finish:
            row.done = True
            row.job.emit(Finished(finish, len(row.ids)))

    def _top(self, logprobs: Any, n: int) -> dict[str, float]:
        if n <= 0:
            return {}
        values, idx = self.torch.topk(logprobs, n)
        return {self.tokenizer.decode([int(i)]): float(v) for v, i in zip(values, idx)}

    def score(self, prompt_ids: list[int], top: int) -> PromptScores:
        torch = self.torch
        with self.lock, torch.inference_mode():
            ids = torch.tensor([prompt_ids], device=self.device)
            logprobs = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), dim=-1)
        tokens = [self.tokenizer.decode([t]) for t in prompt_ids]
        lps: list[float | None] = [None]
        tops: list[dict[str, float] | None] = [None]
        for pos in range(1, len(prompt_ids)):
            lps.append(float(logprobs[pos - 1, prompt_ids[pos]]))
            tops.append(self._top(logprobs[pos - 1], top) if top else None)
        offsets, total = [], 0
        for t in tokens:
            offsets.append(total)
            total += len(t)
        return PromptScores(tokens, lps, tops, offsets)

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = model.generation_config.eos_token_id if model.generation_config else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


def _generator(torch: Any, seed: int | None) -> Any:
    if seed is None:
        return None
    gen = torch.Generator()
    # torch takes a seed in [-2**63, 2**64); the API allows signed 64-bit ones, and raises
    # for anything else: ``manual_seed`` then fails this sequence only (the caller's try)
    gen.manual_seed(seed)
    return gen


# Below this temperature the scaled logits leave float range for any real logit spread:
# sampling is greedy (the limit of softmax(logits / t) as t -> 0).
MIN_TEMPERATURE = 1e-5


def _sample(torch: Any, logits: Any, p: GenParams, gen: Any) -> int:
    """One token: greedy at temperature ~0, else nucleus sampling that keeps >= 1 token."""
    if p.temperature < MIN_TEMPERATURE:
        return int(torch.argmax(logits))
    # in float64 and shifted by the max, so the top token's scaled logit is exactly 0 and
    # softmax never sees inf - inf
    scaled = (logits.double() - logits.max().double()) / p.temperature
    probs = torch.softmax(scaled, dim=-1)
    if p.top_p < 1.0:  # nucleus: the smallest prefix of sorted probs reaching top_p
        sorted_p, order = torch.sort(probs, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < p.top_p
        keep[0] = True  # a tiny top_p still keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0.0:
        return int(torch.argmax(logits))  # degenerate distribution: the greedy limit
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


class TransformersEngine:
    """Engine over the registry's HF model dirs, loaded lazily, one batching worker each."""

    def __init__(self, models: dict[str, ServedModel], device: str = "cpu",
                 max_batch_size: int = 8, batch_wait_ms: float = 5.0, *, dtype: str = "auto") -> None:
        self.models = models
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch_size
        self.wait_ms = batch_wait_ms
        self._workers: dict[str, _ModelWorker] = {}
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _served(self, model: str) -> ServedModel:
        if model not in self.models:
            raise NotFoundError(f"The model {model!r} does not exist.", param="model")
        return self.models[model]

    def _worker(self, model: str) -> _ModelWorker:
        with self._lock:
            if model not in self._workers:
                self._workers[model] = _ModelWorker(self._served(model), self.device,
                                                    self.max_batch, self.wait_ms, self.dtype)
            return self._workers[model]

    def tokenizer(self, model: str) -> Any:
        """The tokenizer, loaded without loading the model weights."""
        with self._lock:
            if model not in self._tokenizers:
                self._tokenizers[model] = load_tokenizer(self._served(model).path)
            return self._tokenizers[model]

    async def generate(self, model: str, params: GenParams) -> AsyncIterator[TokenEvent | Finished]:
        """Queue the request on the model's batching worker and stream its events."""
        worker = await asyncio.to_thread(self._worker, model)
        job = _Job(params, asyncio.get_running_loop(), asyncio.Queue())
        if params.max_tokens <= 0:
            yield Finished("length", 0)
            return
        worker.jobs.put(job)
        try:
            while True:
                item = await job.out.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            job.cancelled.set()  # client gone or done: the worker drops the row

    async def complete(self, model: str, params: GenParams) -> tuple[list[TokenEvent], Finished]:
        """The batching worker streams anyway; gather its events."""
        return await collect(self.generate(model, params))

    async def score_prompt(self, model: str, prompt_ids: list[int], top: int) -> PromptScores:
        """Prompt token logprobs, computed on the model's worker lock."""
        worker = await asyncio.to_thread(self._worker, model)
        return await asyncio.to_thread(worker.score, prompt_ids, top)

    async def aclose(self) -> None:
        """Stop every worker thread."""
        for worker in self._workers.values():
            await asyncio.to_thread(worker.close)
        self._workers.clear()

