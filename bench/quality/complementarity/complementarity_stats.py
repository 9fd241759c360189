"""Aggregation of per-document scores into BPB per domain and overall, with a bootstrap.

Every figure is a sum over documents, so a bootstrap resample is just a vector of document
counts: ``counts @ per_document_nll``. Rows that choose something on the data (the best single
teacher, the best fixed weights, the fixed-share rate) make that choice again inside every
resample, so their intervals include the luck of the choice.

Columns: each domain; ``overall_balanced`` (mean of the domain BPBs, every domain weighs the
same) and ``overall_bytes`` (all bytes pooled, so the domain with most bytes dominates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np

from bench.quality.complementarity.complementarity_math import LN2, DocScore, two_fold_fit

BALANCED, BYTES = "overall_balanced", "overall_bytes"


@dataclass
class DomainTable:
    """One domain's documents as arrays: ``bytes`` [D], ``teachers`` [D, N], ``fixed`` name ->
    [D], ``grid`` [D, G], ``share`` [D, A], ``span_wins`` [D, N + 1], ``n_spans`` [D]."""

    bytes: np.ndarray
    teachers: np.ndarray
    fixed: dict[str, np.ndarray]
    grid: np.ndarray
    share: np.ndarray
    span_wins: np.ndarray
    n_spans: np.ndarray
    cv_choice: list[int] = field(default_factory=list)

    @classmethod
    def from_scores(cls, scores: list[DocScore]) -> DomainTable:
        """Stack one domain's document scores; adds the two-fold cross-fitted fixed weights."""
        if not scores:
            raise ValueError("a domain needs at least one scored document")
        grid = np.stack([s.grid for s in scores])
        fixed = {k: np.array([s.fixed[k] for s in scores]) for k in scores[0].fixed}
        cv, chosen = two_fold_fit(grid)
        fixed["fixed_weights_cv"] = cv
        return cls(np.array([s.n_bytes for s in scores], dtype=np.float64),
                   np.stack([s.teachers for s in scores]), fixed, grid,
                   np.stack([s.share for s in scores]), np.stack([s.span_wins for s in scores]),
                   np.array([s.n_spans for s in scores]), chosen)


# rows chosen on the data, per domain: (family attribute, description)
FITTED = {"best_single": "teachers", "best_fixed_weights": "grid", "fixed_share_fitted": "share"}


def evaluate(tables: dict[str, DomainTable], counts: dict[str, np.ndarray],
             teacher_names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """BPB [B] of every row in every column, for document counts [B, D] per domain.

    ``best_single`` picks one teacher per domain in the domain columns, and one teacher for
    all domains in the overall columns (the best single model); ``best_teacher_per_domain``
    keeps the per-domain picks in the overall columns too.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    nll: dict[str, dict[str, np.ndarray]] = {}  # row -> domain -> [B] nats
    nbytes: dict[str, np.ndarray] = {}
    per_teacher: dict[str, np.ndarray] = {}  # domain -> [B, N] nats
    for d, t in tables.items():
        c = counts[d]
        nbytes[d] = c @ t.bytes
        per_teacher[d] = c @ t.teachers
        for i, name in enumerate(teacher_names):
            nll.setdefault(name, {})[d] = per_teacher[d][:, i]
        for name, v in t.fixed.items():
            nll.setdefault(name, {})[d] = c @ v
        for row, attr in FITTED.items():
            nll.setdefault(row, {})[d] = (c @ getattr(t, attr)).min(axis=1)
    nll["best_teacher_per_domain"] = nll["best_single"]
    total_bytes = cast(np.ndarray, sum(nbytes.values()))  # per bootstrap resample
    for row, by_domain in nll.items():
        bpb = {d: v / LN2 / nbytes[d] for d, v in by_domain.items()}
        bpb[BALANCED] = np.mean([bpb[d] for d in tables], axis=0)
        bpb[BYTES] = sum(by_domain.values()) / LN2 / total_bytes
        out[row] = bpb
    # one teacher for every domain: the teacher whose overall figure is lowest
    balanced = np.mean([per_teacher[d] / LN2 / nbytes[d][:, None] for d in tables], axis=0)
    pooled = sum(per_teacher.values()) / LN2 / total_bytes[:, None]
    out["best_single"] = {**out["best_single"], BALANCED: balanced.min(axis=1), BYTES: pooled.min(axis=1)}
    return out


def point_estimate(tables: dict[str, DomainTable], teacher_names: list[str]) -> dict[str, dict[str, float]]:
    """:func:`evaluate` on the documents as they are (every count 1)."""
    ones = {d: np.ones((1, t.bytes.size)) for d, t in tables.items()}
    return {row: {c: float(v[0]) for c, v in cols.items()}
            for row, cols in evaluate(tables, ones, teacher_names).items()}


def bootstrap_gains(tables: dict[str, DomainTable], teacher_names: list[str], n_resamples: int,
                    seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """95% percentile intervals of each row's gain over the best single teacher.

    Documents are resampled with replacement within each domain (stratified, so every
    resample keeps each domain's document count). Returns row -> column -> ``{lo, hi, lo_pct,
    hi_pct, p_gain_positive}`` where gain = BPB(best single) - BPB(row).
    """
    rng = np.random.default_rng(seed)
    counts = {d: rng.multinomial(t.bytes.size, np.full(t.bytes.size, 1.0 / t.bytes.size),
                                 size=n_resamples).astype(np.float64)
              for d, t in tables.items()}
    res = evaluate(tables, counts, teacher_names)
    base = res["best_single"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row, cols in res.items():
        out[row] = {}
        for col, v in cols.items():
            gain = base[col] - v
            pct = 100.0 * gain / base[col]
            out[row][col] = {"lo": float(np.percentile(gain, 2.5)), "hi": float(np.percentile(gain, 97.5)),
                             "lo_pct": float(np.percentile(pct, 2.5)), "hi_pct": float(np.percentile(pct, 97.5)),
                             "p_gain_positive": float((gain > 0).mean())}
    return out


def fitted_choices(tables: dict[str, DomainTable], teacher_names: list[str], grid: np.ndarray,
                   alphas: list[float]) -> dict[str, dict[str, object]]:
    """What each fitted row chose per domain (on all documents), and the cross-fitted picks."""
    out: dict[str, dict[str, object]] = {}
    for d, t in tables.items():
        out[d] = {
            "best_single": teacher_names[int(t.teachers.sum(axis=0).argmin())],
            "best_fixed_weights": dict(zip(teacher_names, grid[int(t.grid.sum(axis=0).argmin())].round(4).tolist(),
                                           strict=True)),
            "fixed_share_alpha": alphas[int(t.share.sum(axis=0).argmin())],
            "fixed_weights_cv_folds": [dict(zip(teacher_names, grid[c].round(4).tolist(), strict=True))
                                       for c in t.cv_choice],
        }
    return out


def win_shares(tables: dict[str, DomainTable], teacher_names: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Share of documents (lowest NLL) and of spans (highest log-prob) each teacher wins.

    Per domain; ``overall_balanced`` is the mean of the domain shares, ``overall_bytes`` pools
    the documents / spans. Tied spans are counted as ``tie``.
    """
    out: dict[str, dict[str, dict[str, float]]] = {"documents": {}, "spans": {}}
    pooled_docs = np.zeros(len(teacher_names))
    pooled_spans = np.zeros(len(teacher_names) + 1)
    for d, t in tables.items():
        docs = np.bincount(t.teachers.argmin(axis=1), minlength=len(teacher_names)).astype(np.float64)
        spans = t.span_wins.sum(axis=0).astype(np.float64)
        pooled_docs += docs
        pooled_spans += spans
        out["documents"][d] = dict(zip(teacher_names, (docs / docs.sum()).tolist(), strict=True))
        out["spans"][d] = dict(zip([*teacher_names, "tie"], (spans / spans.sum()).tolist(), strict=True))
    for kind, pooled in (("documents", pooled_docs), ("spans", pooled_spans)):
        names = list(next(iter(out[kind].values())))
        out[kind][BALANCED] = {n: float(np.mean([out[kind][d][n] for d in tables])) for n in names}
        out[kind][BYTES] = dict(zip(names, (pooled / pooled.sum()).tolist(), strict=True))
    return out
