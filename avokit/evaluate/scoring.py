"""Log-likelihood and greedy-generation scoring for any Hugging Face causal LM.

One implementation shared by the task suites and the lm-evaluation-harness adapter, so a
number from ``avokit eval`` and one from ``lm_eval --model avokit`` mean the same thing.
Every sequence is conditioned on a start token (BOS, else EOS), like the teachers' records
(see :mod:`avokit.records`), so the first byte of a text is scored too.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LoglikResult:
    """Log-probability (nats) of a continuation given its context, and whether greedy decoding
    would have produced exactly the continuation's tokens."""

    logprob: float
    is_greedy: bool
    n_tokens: int


def start_token_id(tokenizer: Any) -> int:
    """The token every sequence is conditioned on: BOS, else EOS."""
    tok = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tok is None:
        raise ValueError("tokenizer has neither a BOS nor an EOS token to start sequences with")
    return int(tok)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def context_continuation_ids(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, tokenized jointly (as the model would see the
    whole string), split where the context ends. A trailing space of the context moves to the
    continuation, because BPE tokenizers attach spaces to the following word."""
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context) if context else []
    # Joint tokenization may merge across the seam; keep at least one continuation token.
    cut = min(len(ctx), len(whole) - 1) if whole else 0
    return whole[:cut], whole[cut:]


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _keeps_logits(model: Any) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs do)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.no_grad()
def score_token_pairs(
    model: Any, start_id: int, pairs: list[tuple[list[int], list[int]]], max_length: int, batch_size: int = 8
) -> list[LoglikResult]:
    """Score ``(context_ids, continuation_ids)`` pairs in right-padded batches.

    Each row is ``[start] + context + continuation`` truncated from the left to
    ``max_length + 1`` tokens (the continuation is always kept whole when it fits).
    """
    device = _model_device(model)
    out: list[LoglikResult | None] = [None] * len(pairs)
    # Longest first: fewer pad tokens per batch and OOM shows up on the first batch.
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    keeps_logits = _keeps_logits(model)
    for b0 in range(0, len(order), batch_size):
        idx = order[b0 : b0 + batch_size]
        rows, n_conts = [], []
        for i in idx:
            ctx, cont = pairs[i]
            if not cont:
                raise ValueError(f"request {i} has an empty continuation")
            seq = ([start_id] + ctx + cont)[-(max_length + 1) :]
            rows.append(seq)
            n_conts.append(min(len(cont), len(seq) - 1))
        width = max(len(r) for r in rows) - 1
        inp = torch.zeros((len(rows), width), dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        for r, seq in enumerate(rows):
            inp[r, : len(seq) - 1] = torch.tensor(seq[:-1])
            att[r, : len(seq) - 1] = 1
        # the output head is most of the cost for large vocabularies (Gemma's 262k): project
        # only the positions some row's continuation needs
        spans = [(len(seq) - 1 - n, len(seq) - 1) for seq, n in zip(rows, n_conts)]
        keep = sorted({p for a, b in spans for p in range(a, b)})
        column = {p: i for i, p in enumerate(keep)}
        kwargs = {"logits_to_keep": torch.tensor(keep, device=device)} if keeps_logits else {}
        logits = model(input_ids=inp.to(device), attention_mask=att.to(device), **kwargs).logits
        if not kwargs:
            column = {p: p for p in range(width)}
        for r, (i, seq, n, (a, b)) in enumerate(zip(idx, rows, n_conts, spans)):
            tgt = torch.tensor(seq[-n:], device=device)
            cols = torch.tensor([column[p] for p in range(a, b)], device=device)
            lp = F.log_softmax(logits[r, cols].float(), dim=-1)
            gold = lp.gather(1, tgt[:, None]).squeeze(1)
            greedy = bool((lp.argmax(dim=-1) == tgt).all())
            out[i] = LoglikResult(float(gold.double().sum()), greedy, n)
    return [o for o in out if o is not None]


def loglikelihoods(
    model: Any, tokenizer: Any, requests: list[tuple[str, str]], max_length: int = 1024, batch_size: int = 8
) -> list[LoglikResult]:
    """``log p(continuation | context)`` for each ``(context, continuation)`` request."""
    pairs = [context_continuation_ids(tokenizer, c, x) for c, x in requests]
    return score_token_pairs(model, start_token_id(tokenizer), pairs, max_length, batch_size)


def rolling_loglikelihood(
    model: Any, tokenizer: Any, text: str, max_length: int = 1024, batch_size: int = 8
) -> float:
    """Total log-probability (nats) of ``text`` from the start token, in rolling windows.

    Targets are split into blocks of ``max_length // 2`` tokens; each block is scored with as
    much preceding text as fits in ``max_length`` (at least half a window of context), so a
    long document is scored exactly once per token.
    """
    ids = _encode(tokenizer, text)
    if not ids:
        return 0.0
    block = max(1, max_length // 2)
    pairs = []
    for a in range(0, len(ids), block):
        cont = ids[a : a + block]
        ctx = ids[max(0, a - (max_length - len(cont))) : a]
        pairs.append((ctx, cont))
    res = score_token_pairs(model, start_token_id(tokenizer), pairs, max_length, batch_size)
    return float(sum(r.logprob for r in res))


@torch.no_grad()
def greedy_generate(
    model: Any, tokenizer: Any, prompt: str, until: list[str], max_new_tokens: int = 32, max_length: int = 1024
) -> str:
    """Greedy continuation of ``prompt``, cut at the first stop string in ``until``."""
    ids = ([start_token_id(tokenizer)] + _encode(tokenizer, prompt))[-max(1, max_length - max_new_tokens) :]
    inp = torch.tensor([ids], device=_model_device(model))
    gen = model.generate(
        input_ids=inp,
        attention_mask=torch.ones_like(inp),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start_token_id(tokenizer),
    )
    text = tokenizer.decode(gen[0, len(ids) :], skip_special_tokens=True)
    for stop in until:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text
