"""How faithful a lower-precision capture is to float32: the same documents scored twice.

Pure functions over :class:`~avokit.records.TeacherRecords` (what the cache stores, and so
exactly what a student learns from) plus one over full logits. Used by capture's bf16 check
(``capture.bf16_check_docs``) and by bench/capture/fidelity.py, which commits the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from avokit.errors import AvokitError, CacheError
from avokit.recipe import Recipe, TeacherConfig
from avokit.records import TeacherRecords

# Thresholds of issue 39, set from a measurement of this project's three teachers on 24
# held-out documents in bf16 on an AMX Xeon (BPB within 0.04%, KL 0.0005-0.0012 nats, top-1
# agreement 97.5-98.6% with flips at near-ties, float32's top-1 always in bf16's top-5), with
# room for other corpora.
MAX_BPB_REL_DIFF = 0.005
MAX_MEAN_KL = 0.005
MIN_TOP1_IN_TOP5 = 0.999


class Fidelity(BaseModel):
    """Records scored in ``test`` precision against the same documents in float32 (``ref``)."""

    docs: int
    positions: int
    top1_agreement: float  # share of positions whose top-1 id is the same
    topk_overlap: float  # mean |ref top-k ∩ test top-k| / k
    ref_top1_in_test_top5: float  # share of positions whose float32 top-1 is in test's top-5
    gold_mean_abs_diff: float  # nats, mean |Δ log p(gold)|
    kept_mean_abs_diff: float  # nats, mean |Δ log p| over ids kept in both top-k
    kl_kept_mean: float  # nats per position, KL(ref || test) over the ids kept by both + the rest
    bpb_ref: float
    bpb_test: float
    bpb_rel_diff: float  # (bpb_test - bpb_ref) / bpb_ref

    def failures(self) -> list[str]:
        """The thresholds this comparison misses, each as a sentence (empty: it passes)."""
        out = []
        if abs(self.bpb_rel_diff) > MAX_BPB_REL_DIFF:
            out.append(f"BPB differs by {self.bpb_rel_diff:+.3%} (limit ±{MAX_BPB_REL_DIFF:.1%})")
        if self.kl_kept_mean > MAX_MEAN_KL:
            out.append(f"mean KL {self.kl_kept_mean:.4f} nats > {MAX_MEAN_KL}")
        if self.ref_top1_in_test_top5 < MIN_TOP1_IN_TOP5:
            out.append(f"float32's top-1 in the top-5 at {self.ref_top1_in_test_top5:.2%} of "
                       f"positions (< {MIN_TOP1_IN_TOP5:.1%})")
        return out


def _log1mexp_sum(lp: np.ndarray) -> np.ndarray:
    """log(1 - sum(exp(lp))) along the last axis, floored where rounding makes it <= 0."""
    rest = 1.0 - np.exp(lp.astype(np.float64)).sum(axis=-1)
    return np.log(np.maximum(rest, 1e-12))


def _kept(ref_ids: np.ndarray, ref_lp: np.ndarray, test_ids: np.ndarray, test_lp: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Per position of ``[n, k]`` top-k pairs: the log-probs of the ids both keep, in ref's
    order, as two ragged lists of arrays."""
    r, t = [], []
    for i in range(ref_ids.shape[0]):
        _, ri, ti = np.intersect1d(ref_ids[i], test_ids[i], return_indices=True)
        r.append(ref_lp[i, ri].astype(np.float64))
        t.append(test_lp[i, ti].astype(np.float64))
    return r, t  # type: ignore[return-value]


def kept_kl(ref_ids: np.ndarray, ref_lp: np.ndarray, test_ids: np.ndarray, test_lp: np.ndarray) -> np.ndarray:
    """KL(ref || test) per position over the ids both top-k keep, each its own outcome, plus
    one outcome for everything else. Shapes ``[n, k]`` each; returns float64 ``[n]``.

    A coarse-graining of the full-vocabulary KL, so never above it; it is the divergence
    between the two caches as a student's token-level loss sees them.
    """
    return np.array([_kl_with_rest(p, q) for p, q in zip(*_kept(ref_ids, ref_lp, test_ids, test_lp))])


def _kl_with_rest(p: np.ndarray, q: np.ndarray) -> float:
    lp = np.append(p, _log1mexp_sum(p))
    lq = np.append(q, _log1mexp_sum(q))
    return max(float(np.sum(np.exp(lp) * (lp - lq))), 0.0)


def compare_records(ref: Sequence[TeacherRecords], test: Sequence[TeacherRecords],
                    doc_bytes: Sequence[int]) -> Fidelity:
    """:class:`Fidelity` of ``test`` against ``ref``: the same documents in the same order,
    ``doc_bytes`` their UTF-8 lengths (the BPB denominators).

    Raises :class:`AvokitError` when the two do not describe the same tokens.
    """
    if not ref or len(ref) != len(test) or len(ref) != len(doc_bytes):
        raise AvokitError(f"compare_records: {len(ref)} reference, {len(test)} test records and "
                          f"{len(doc_bytes)} byte counts (need the same documents, at least one)")
    for r, t in zip(ref, test):
        if r.doc_id != t.doc_id or not np.array_equal(r.token_ids, t.token_ids):
            raise AvokitError(f"compare_records: document {r.doc_id!r} was tokenized differently "
                              f"in the two captures")
    r_ids = np.concatenate([r.topk_ids for r in ref])
    t_ids = np.concatenate([t.topk_ids for t in test])
    r_lp = np.concatenate([r.topk_logprobs for r in ref]).astype(np.float64)
    t_lp = np.concatenate([t.topk_logprobs for t in test]).astype(np.float64)
    r_gold = np.concatenate([r.gold_logprob for r in ref]).astype(np.float64)
    t_gold = np.concatenate([t.gold_logprob for t in test]).astype(np.float64)
    k = r_ids.shape[1]
    top5 = np.argsort(-t_lp, axis=1, kind="stable")[:, : min(5, k)]
    r_top1 = r_ids[np.arange(len(r_ids)), np.argmax(r_lp, axis=1)]
    t_top1 = t_ids[np.arange(len(t_ids)), np.argmax(t_lp, axis=1)]
    in_top5 = (np.take_along_axis(t_ids, top5, axis=1) == r_top1[:, None]).any(axis=1)
    r_kept, t_kept = _kept(r_ids, r_lp, t_ids, t_lp)
    total_bytes = float(sum(doc_bytes))
    bpb_ref = float(-r_gold.sum() / (math.log(2) * total_bytes))
    bpb_test = float(-t_gold.sum() / (math.log(2) * total_bytes))
    return Fidelity(
        docs=len(ref), positions=int(len(r_ids)),
        top1_agreement=float(np.mean(r_top1 == t_top1)),
        topk_overlap=float(np.mean([p.size / k for p in r_kept])),
        ref_top1_in_test_top5=float(np.mean(in_top5)),
        gold_mean_abs_diff=float(np.mean(np.abs(r_gold - t_gold))),
        kept_mean_abs_diff=float(np.mean(np.abs(np.concatenate(r_kept) - np.concatenate(t_kept)))),
        kl_kept_mean=float(np.mean([_kl_with_rest(p, q) for p, q in zip(r_kept, t_kept)])),
        bpb_ref=bpb_ref, bpb_test=bpb_test, bpb_rel_diff=(bpb_test - bpb_ref) / bpb_ref,
    )


def full_kl(ref_logits: np.ndarray, test_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) || softmax(test)) per row over the full vocabulary, float64 ``[n]``;
    inputs ``[n, V]`` logits of the same positions."""
    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        m = x.max(axis=1, keepdims=True)
        return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))

    lp, lq = log_softmax(ref_logits), log_softmax(test_logits)
    return np.maximum(np.sum(np.exp(lp) * (lp - lq), axis=1), 0.0)


# -- capture's verdict, kept next to the cache (written by avokit.capture.dtype_check) --

CHECK_FILE = "bf16_check.json"


def check_path(recipe: Recipe, teacher: str) -> Path:
    """``run_dir/cache/<teacher>/bf16_check.json``."""
    return recipe.run_dir / "cache" / teacher / CHECK_FILE


def read_check(path: Path) -> dict | None:
    """The stored verdict, or None where no check ran; a damaged file is an error naming it."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("passed"), bool):
        raise CacheError(f"{path}: unreadable bf16 check (no boolean `passed`); delete it to check again")
    return data


def checked_config(recipe: Recipe, config: TeacherConfig) -> TeacherConfig:
    """``config`` with ``dtype: float32`` where this run's bf16 check failed for it, so every
    stage scores the teacher in the dtype its cache was captured in; else unchanged."""
    verdict = read_check(check_path(recipe, config.name))
    if config.dtype == "auto" and verdict is not None and not verdict["passed"]:
        return config.model_copy(update={"dtype": "float32"})
    return config
