"""Scoring a causal LM into :class:`~avokit.records.TeacherRecords` without ever holding more
than one chunk of full-vocabulary logits.

The model's base (decoder stack + final norm) runs to hidden states; the output head, any
final logit soft-capping and a float32 log-softmax then run on ``vocab_chunk`` positions at a
time, keeping only the gold log-prob, the top-k and the word-start log-mass of each position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avokit.align.bytes import TokenBytes
from avokit.align.extending import ExtendingIndex
from avokit.errors import AvokitError
from avokit.records import TeacherRecords, TokenizedDoc
from avokit.teachers.prefix_cuts import CutCollector

WORD_START_BYTES = (b" ", b"\n", b"\t")
# log-mass recorded where no returned top-k entry starts a word (top-k approximation only):
# e^-30 ~ 1e-13, far below any real word-start mass, and finite so losses stay finite.
EMPTY_TOPK_LOGMASS = -30.0


def word_start_mask(tb: TokenBytes, width: int) -> np.ndarray:
    """bool [width]: ids whose bytes start with space/newline/tab, or that are special.

    Ids at or past the tokenizer length (padding of a padded vocabulary) are never word starts.
    """
    mask = np.zeros(width, dtype=bool)
    for idx, piece in enumerate(tb.table[:width]):
        mask[idx] = bool(tb.special[idx]) or piece[:1] in WORD_START_BYTES
    return mask


def text_word_starts(tb: TokenBytes) -> np.ndarray:
    """bool [V]: ids whose bytes begin a new word of the text (space/newline/tab first; never
    a special token, which spells no text)."""
    return np.array([piece[:1] in WORD_START_BYTES for piece in tb.table], dtype=bool) & ~tb.special


def resolve_start_token_id(tokenizer: Any, explicit: str | None = None) -> int:
    """The id a teacher conditions every document on (see :mod:`avokit.records`).

    Order: ``explicit`` token string; the tokenizer's BOS if it adds one by default; its
    ``bos_token``; its ``eos_token``. Raises AvokitError when none exists.
    """
    if explicit is not None:
        vocab = tokenizer.get_vocab()
        if explicit not in vocab:
            raise AvokitError(f"start_token {explicit!r} is not in the teacher's vocabulary")
        return int(vocab[explicit])
    # A tokenizer that adds BOS by default adds its bos_token, so both cases are this one.
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        return int(bos)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        return int(eos)
    raise AvokitError("the teacher's tokenizer has neither a BOS nor an EOS token; set start_token")


@dataclass(frozen=True)
class Window:
    """One model input over ``seq = [start] + doc.ids``: input ``seq[a:b]``; the logits at
    input positions ``first .. b-a-1`` are kept and predict ``doc.ids[a+first .. b-1]``."""

    doc: int
    a: int
    b: int
    first: int


def plan_windows(doc: int, n_tokens: int, max_length: int) -> list[Window]:
    """Rolling windows of at most ``max_length`` inputs covering every token of a document.

    Each later window re-reads the previous ``max_length // 2`` inputs as context and scores
    only new tokens, so every position is predicted exactly once.
    """
    if n_tokens == 0:
        return []
    context = max_length // 2
    windows = [Window(doc, 0, min(max_length, n_tokens), 0)]
    while windows[-1].b < n_tokens:
        prev_b = windows[-1].b
        a = prev_b - context
        windows.append(Window(doc, a, min(a + max_length, n_tokens), prev_b - a))
    return windows


@dataclass(frozen=True)
class HeadSpec:
    """How hidden states become logits: output head, soft-capping, vocabulary sizes."""

    head: torch.nn.Module
    softcap: float | None
    real_vocab: int  # tokenizer length; top-k only among ids below it
    word_mask: torch.Tensor  # bool [width] on the head's device


def head_spec(model: Any, tb: TokenBytes) -> HeadSpec:
    """Output head, final soft-capping and word-start mask of a ``*ForCausalLM`` model."""
    head = model.get_output_embeddings()
    width = int(head.weight.shape[0])
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    mask = torch.from_numpy(word_start_mask(tb, width)).to(head.weight.device)
    return HeadSpec(head=head, softcap=float(softcap) if softcap else None,
                    real_vocab=min(tb.size, width), word_mask=mask)


def score_hidden(
    hidden: torch.Tensor, targets: torch.Tensor, spec: HeadSpec, top_k: int, vocab_chunk: int,
    on_chunk: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gold log-prob, top-k and word-start log-mass for hidden states, chunk by chunk.

    Shapes: ``hidden`` [P, H], ``targets`` int64 [P] -> gold float32 [P], top-k ids int64
    [P, k], top-k log-probs float32 [P, k] (descending), boundary log-mass float32 [P].
    Normalisation is over the full logit width; top-k only among real ids. ``on_chunk(first,
    probs, log_total)`` sees each chunk's full distribution (``probs`` = exp(logits - peak),
    read-only) for what else a capture keeps (:class:`avokit.teachers.prefix_cuts.CutCollector`).
    """
    n = hidden.shape[0]
    gold = torch.empty(n, dtype=torch.float32)
    top_ids = torch.empty(n, top_k, dtype=torch.int64)
    top_lp = torch.empty(n, top_k, dtype=torch.float32)
    bound = torch.empty(n, dtype=torch.float32)
    word = spec.word_mask.to(torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    for lo in range(0, n, vocab_chunk):
        hi = min(lo + vocab_chunk, n)
        logits = spec.head(hidden[lo:hi]).float()
        if spec.softcap is not None:
            logits.div_(spec.softcap).tanh_().mul_(spec.softcap)
        tgt = targets[lo:hi].to(logits.device)
        gold_logit = logits.gather(1, tgt[:, None]).squeeze(1)
        vals, ids = torch.topk(logits[:, : spec.real_vocab], top_k, dim=-1, sorted=True)
        peak = vals[:, 0]
        if spec.real_vocab < logits.shape[1]:  # a padded column may hold the largest logit
            peak = torch.maximum(peak, logits[:, spec.real_vocab :].amax(dim=-1))
        # One exp pass, in place, serves both the normaliser and the word-start mass (a
        # mat-vec with the 0/1 mask): the logits chunk is the largest tensor here, and every
        # extra pass over it (logsumexp, a column copy, a second logsumexp) cost capture
        # throughput, most for Gemma's 262k vocabulary.
        probs = logits.sub_(peak[:, None]).exp_()
        log_total = probs.sum(dim=-1).log()
        if on_chunk is not None:
            on_chunk(lo, probs, log_total)
        lse = peak + log_total
        gold[lo:hi] = (gold_logit - lse).cpu()
        top_lp[lo:hi] = (vals - lse[:, None]).cpu()
        top_ids[lo:hi] = ids.cpu()
        # a word-start mass below float32's smallest normal relative to the top token
        # (e^-87) is recorded as that floor rather than -inf
        bound[lo:hi] = ((probs @ word).clamp_min(tiny).log() - log_total).cpu()
        del logits, probs
    return gold, top_ids, top_lp, bound


def base_model(model: Any) -> torch.nn.Module:
    """The decoder stack of a ``*ForCausalLM`` (returns final-normed hidden states)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if base is None or base is model:
        base = model.get_decoder()
    return base


@dataclass(frozen=True)
class WindowBatch:
    """One right-padded model input of ``B`` windows and the positions whose outputs are kept.

    - ids, mask: int64 [B, T] (T = the longest window of the batch)
    - rows, cols: int64 [P], the (row, column) of every position scored for the first time
      (a window's ``first`` onwards), in window order
    """

    windows: list[Window]
    ids: torch.Tensor
    mask: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor


def window_batches(seqs: list[np.ndarray], max_length: int, batch_size: int) -> Iterator[WindowBatch]:
    """Rolling windows of every sequence (start token + document ids), longest first, batched.

    Sorting by length puts similar lengths in one batch, so padding stays small.
    """
    windows = [w for i, s in enumerate(seqs) for w in plan_windows(i, len(s) - 1, max_length)]
    windows.sort(key=lambda w: w.b - w.a, reverse=True)
    for lo in range(0, len(windows), batch_size):
        batch = windows[lo : lo + batch_size]
        width = max(w.b - w.a for w in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.int64)
        mask = torch.zeros(len(batch), width, dtype=torch.int64)
        for r, w in enumerate(batch):
            ids[r, : w.b - w.a] = torch.from_numpy(seqs[w.doc][w.a : w.b])
            mask[r, : w.b - w.a] = 1
        rows = torch.cat([torch.full((w.b - w.a - w.first,), r) for r, w in enumerate(batch)])
        cols = torch.cat([torch.arange(w.first, w.b - w.a) for w in batch])
        yield WindowBatch(batch, ids, mask, rows, cols)


@torch.inference_mode()
def score_tokenized(
    model: Any,
    docs: list[TokenizedDoc],
    doc_ids: list[str],
    start_id: int,
    spec: HeadSpec,
    top_k: int,
    max_length: int,
    batch_size: int,
    vocab_chunk: int,
    inside: tuple[ExtendingIndex, int] | None = None,
) -> list[TeacherRecords]:
    """Score tokenized documents with right-padded batches of rolling windows.

    ``inside``: ``(index, m)`` also keeps each gold token's :class:`~avokit.records.PrefixCuts`
    (the teacher's index of its own vocabulary, and the number of extending ids per cut)."""
    if top_k > spec.real_vocab:
        raise AvokitError(f"top_k={top_k} exceeds the teacher's vocabulary of {spec.real_vocab}")
    cuts = CutCollector(docs, inside[0], inside[1]) if inside is not None else None
    device: Any = spec.head.weight.device
    base = base_model(model)
    seqs = [np.concatenate([[start_id], d.ids]).astype(np.int64) for d in docs]
    out = [
        (np.zeros(len(d.ids), np.float32), np.zeros((len(d.ids), top_k), np.int32),
         np.zeros((len(d.ids), top_k), np.float32), np.zeros(len(d.ids), np.float32))
        for d in docs
    ]
    for wb in window_batches(seqs, max_length, batch_size):
        hidden = base(input_ids=wb.ids.to(device), attention_mask=wb.mask.to(device),
                      use_cache=False).last_hidden_state
        targets = torch.cat([torch.from_numpy(seqs[w.doc][w.a + w.first + 1 : w.b + 1])
                             for w in wb.windows])
        picked = hidden[wb.rows.to(device), wb.cols.to(device)]
        if cuts is not None:
            cuts.plan([(w.doc, t) for w in wb.windows for t in range(w.a + w.first, w.b)])
        gold, t_ids, t_lp, bound = score_hidden(picked, targets, spec, top_k, vocab_chunk,
                                                cuts.on_chunk if cuts is not None else None)
        off = 0
        for w in wb.windows:
            n_new = w.b - w.a - w.first
            dst = slice(w.a + w.first, w.b)
            g, i_, l_, bm = out[w.doc]
            g[dst] = gold[off : off + n_new].numpy()
            i_[dst] = t_ids[off : off + n_new].numpy()
            l_[dst] = t_lp[off : off + n_new].numpy()
            bm[dst] = bound[off : off + n_new].numpy()
            off += n_new
    return [
        TeacherRecords(doc_id=did, token_ids=d.ids.astype(np.int32),
                       byte_ends=d.byte_ends.astype(np.int64), gold_logprob=g, topk_ids=i_,
                       topk_logprobs=l_, boundary_logmass=bm,
                       cuts=cuts.result(n) if cuts is not None else None)
        for n, (did, d, (g, i_, l_, bm)) in enumerate(zip(doc_ids, docs, out))
    ]


def topk_boundary_logmass(
    topk_ids: np.ndarray, topk_logprobs: np.ndarray, word_mask: np.ndarray
) -> np.ndarray:
    """The top-k approximation of the word-start log-mass (endpoints without full logits).

    Shapes: ``topk_ids`` int [n, k], ``topk_logprobs`` float [n, k], ``word_mask`` bool [V]
    -> float32 [n]: log of the summed probability of the word-start ids among the top-k,
    ``EMPTY_TOPK_LOGMASS`` where none is. It is a lower bound of the full-vocabulary value.
    """
    if topk_ids.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    safe = np.clip(topk_ids, 0, word_mask.shape[0] - 1)
    is_word = word_mask[safe] & (topk_ids >= 0) & (topk_ids < word_mask.shape[0])
    masked = np.where(is_word, topk_logprobs.astype(np.float64), -np.inf)
    peak = masked.max(axis=1, keepdims=True)
    finite = np.isfinite(peak[:, 0])
    total = np.full(topk_ids.shape[0], EMPTY_TOPK_LOGMASS, dtype=np.float64)
    shifted = np.exp(masked[finite] - peak[finite])
    total[finite] = peak[finite, 0] + np.log(shifted.sum(axis=1))
    return np.maximum(total, EMPTY_TOPK_LOGMASS).astype(np.float32)


def perplexity(records: list[TeacherRecords]) -> float:
    """Per-token perplexity over documents: exp(total NLL / total tokens)."""
    n = sum(r.n_positions for r in records)
    if n == 0:
        raise AvokitError("cannot compute perplexity over zero tokens")
    return math.exp(sum(r.nll_nats() for r in records) / n)
