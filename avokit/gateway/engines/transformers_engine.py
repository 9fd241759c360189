"""In-process transformers generation with request batching (the CPU-friendly default).

One worker thread per model gathers requests that arrive within ``batch_wait_ms`` (up to
``max_batch_size``), left-pads them into one batch and decodes step by step with a KV
cache; each request's tokens are pushed to its own asyncio queue as they are sampled, so
batched requests still stream independently. A cancelled request (client gone) stops
receiving events and leaves the batch at the next step.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from avokit.gateway.engines.base import (
    Finished,
    GenParams,
    PromptScores,
    ServedModel,
    TokenEvent,
    collect,
    load_tokenizer,
)
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


class _ModelWorker:
    """Owns one model; runs batches on its own thread."""

    def __init__(self, served: ServedModel, device: str, max_batch: int, wait_ms: float) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.torch = torch
        self.tokenizer = load_tokenizer(served.path)
        self.model = AutoModelForCausalLM.from_pretrained(str(served.path), dtype=torch.float32)
        self.model.to(device).eval()
        self.device = device
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.eos = set(_eos_ids(self.model, self.tokenizer))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos) if self.eos else 0)
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.lock = threading.Lock()  # scoring and batches share the model
        self.thread = threading.Thread(target=self._run, name=f"avokit-gen-{served.name}",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch = [first]
            try:
                # Requests arriving within the wait window share the batch.
                while len(batch) < self.max_batch:
                    nxt = self.jobs.get(timeout=self.wait_s) if self.wait_s else self.jobs.get_nowait()
                    if nxt is None:
                        self.jobs.put(None)
                        break
                    batch.append(nxt)
            except queue.Empty:
                pass
            try:
                with self.lock, self.torch.inference_mode():
                    self._generate([j for j in batch if not j.cancelled.is_set()])
            except Exception as err:  # the shared forward pass failed: keep the worker alive
                for job in batch:
                    job.emit(UpstreamError(f"generation failed: {type(err).__name__}"))

    def _generate(self, jobs: list[_Job]) -> None:
        torch = self.torch
        if not jobs:
            return
        rows = [_Row(j) for j in jobs]
        width = max(len(j.params.prompt_ids) for j in jobs)
        ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for i, job in enumerate(jobs):  # left padding: every row's last token is aligned
            p = job.params.prompt_ids
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        gens: list[Any] = []
        for row in rows:
            try:
                gens.append(_generator(torch, row.job.params.seed))
            except Exception as err:  # a seed torch refuses fails its own request only
                gens.append(None)
                row.done = True
                row.job.emit(UpstreamError(f"generation failed: {type(err).__name__}"))
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        past = None
        step_input = ids
        for step in range(max(j.params.max_tokens for j in jobs)):
            out = self.model(input_ids=step_input, attention_mask=mask, position_ids=positions,
                             past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            next_ids = torch.full((len(rows),), self.pad_id, dtype=torch.long)
            for i, row in enumerate(rows):
                if row.done:
                    continue
                try:
                    token = _sample(torch, logits[i], row.job.params, gens[i])
                    self._advance(row, token, logprobs[i], step)
                except Exception as err:  # this sequence fails alone; the batch goes on
                    row.done = True
                    row.job.emit(UpstreamError(f"generation failed: {type(err).__name__}"))
                    continue
                next_ids[i] = token
            if all(r.done for r in rows):
                return
            step_input = next_ids.view(-1, 1).to(self.device)
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype,
                                               device=self.device)], dim=1)
            positions = positions[:, -1:] + 1

    def _advance(self, row: _Row, token: int, logprobs: Any, step: int) -> None:
        p = row.job.params
        if row.job.cancelled.is_set():
            row.done = True
            return
        if token in self.eos:
            row.done = True
            row.job.emit(Finished("stop", len(row.ids)))
            return
        row.ids.append(token)
        full = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        finish: str | None = None
        for s in p.stop:
            cut = full.find(s, max(0, len(row.text) - len(s)))
            if s and cut >= 0:
                full, finish = full[:cut], "stop"
                break
        if finish is None and len(row.ids) >= p.max_tokens:
            finish = "length"
        # hold back a partial multi-byte character until its bytes are complete
        delta = full[len(row.text):] if (finish or not full.endswith("\ufffd")) else ""
        event = TokenEvent(text=delta, tokens=1)
        if p.top_logprobs is not None:
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
                 max_batch_size: int = 8, batch_wait_ms: float = 5.0) -> None:
        self.models = models
        self.device = device
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
                                                    self.max_batch, self.wait_ms)
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

