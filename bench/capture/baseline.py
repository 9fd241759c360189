"""The forward passes the capture benchmark compares capture against.

Both run over exactly the model inputs that capture builds: the same shard plan, the same
length-sorted groups of ``capture.batch_size`` documents, the same rolling windows of
``max_length`` inputs, sorted and batched exactly as :func:`avokit.teachers.scoring.score_tokenized`
does. Tokenizing and padding happen before the clock starts; only the model runs while timed.

- :func:`bare_forward`: the cheapest honest plain forward that yields the same information
  capture stores (and more: every full-vocabulary logit): the decoder body over the padded
  batch, then the output head (plus the model's final soft-capping, if any) over every kept
  (non-padding, not-yet-scored) position, ``vocab_chunk`` positions at a time, exactly like an
  optimised plain forward that never holds ``[batch, seq, vocab]`` at once. No log-softmax,
  no top-k, no gather, no copy to numpy, no writing: those are capture's own costs.
- :func:`hf_dense_forward`: ``model(input_ids, attention_mask, use_cache=False).logits`` as
  Hugging Face runs it: the head over every position including padding, one dense
  ``[batch, seq, vocab]`` float32 tensor per batch. Reported for reference only; it is what
  the first version of this benchmark timed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from avokit.capture import plan_shards
from avokit.corpus import load_split
from avokit.recipe import Recipe
from avokit.teachers import HFTeacher
from avokit.teachers.scoring import base_model, window_batches


@dataclass(frozen=True)
class ModelBatch:
    """One padded model input and the (row, column) positions whose logits capture keeps."""

    ids: torch.Tensor  # int64 [B, T]
    mask: torch.Tensor  # int64 [B, T]
    rows: torch.Tensor  # int64 [P]
    cols: torch.Tensor  # int64 [P]


def capture_batches(teacher: HFTeacher, recipe: Recipe) -> list[ModelBatch]:
    """The model inputs :func:`avokit.capture.run_capture` feeds ``teacher``, in its order."""
    splits = {s: load_split(recipe, s) for s in ("train", "heldout")}
    out: list[ModelBatch] = []
    for plan in plan_shards(splits, recipe.capture.docs_per_shard):
        docs = sorted(plan.docs, key=lambda d: len(d.text))  # as capture's _capture_shard
        for j in range(0, len(docs), recipe.capture.batch_size):
            toks = teacher.tokenize([d.text for d in docs[j : j + recipe.capture.batch_size]])
            out.extend(_window_batches(teacher, [t.ids for t in toks]))
    return out


def _window_batches(teacher: HFTeacher, docs: list[np.ndarray]) -> list[ModelBatch]:
    """The batching inside ``score_tokenized``, from the same function."""
    seqs = [np.concatenate([[teacher.start_token_id], d]).astype(np.int64) for d in docs]
    return [ModelBatch(b.ids, b.mask, b.rows, b.cols)
            for b in window_batches(seqs, teacher.max_length, teacher.batch_size)]


def scored_positions(batches: list[ModelBatch]) -> int:
    """Positions whose next-token distribution the batches produce (= cache tokens)."""
    return sum(int(b.rows.numel()) for b in batches)


@torch.inference_mode()
def bare_forward(teacher: HFTeacher, batches: list[ModelBatch]) -> None:
    """Body + output head over the kept positions, ``teacher.vocab_chunk`` at a time."""
    model = teacher.model
    body, head = base_model(model), model.get_output_embeddings()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    device = head.weight.device
    for b in batches:
        hidden = body(input_ids=b.ids.to(device), attention_mask=b.mask.to(device),
                      use_cache=False).last_hidden_state
        picked = hidden[b.rows.to(device), b.cols.to(device)]
        for lo in range(0, picked.shape[0], teacher.vocab_chunk):
            logits = head(picked[lo : lo + teacher.vocab_chunk]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            del logits


@torch.inference_mode()
def hf_dense_forward(teacher: HFTeacher, batches: list[ModelBatch]) -> None:
    """``model(...).logits``: dense [B, T, V] logits per batch, padding included."""
    device = next(teacher.model.parameters()).device
    for b in batches:
        _ = teacher.model(input_ids=b.ids.to(device), attention_mask=b.mask.to(device),
                          use_cache=False).logits
