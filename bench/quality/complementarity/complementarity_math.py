"""Pure functions of the complementarity benchmark: N-teacher spans, mixtures, aggregation.

No models, no files: everything here takes numpy arrays and is unit-tested on synthetic
records (``tests/test_bench_complementarity.py``); ``complementarity.py`` feeds it the caches.

Unit of comparison: the *span* between two consecutive byte offsets where ALL teachers end a
token (the common boundaries of every tokenization). Each teacher's log-probability of a span
given the same byte prefix is the sum of its gold-token log-probs inside it, so per-span
mixtures of the teachers are sequential predictors whose bits per byte are comparable with
each teacher's. Pairwise boundaries would give each pair finer spans but make the three-way
mixtures undefined; boundaries common to all three are the one segmentation every mixture
can share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LN2 = math.log(2.0)


def common_boundaries(ends: Sequence[np.ndarray]) -> np.ndarray:
    """Sorted byte offsets (int64) where every tokenization in ``ends`` ends a token."""
    if not ends:
        raise ValueError("need at least one teacher's byte_ends")
    common = np.unique(np.asarray(ends[0], dtype=np.int64))
    for e in ends[1:]:
        common = np.intersect1d(common, np.asarray(e, dtype=np.int64))
    return common[common > 0]


@dataclass(frozen=True)
class Spans:
    """One document's spans: ``logp`` float64 [n_teachers, m] (each teacher's log-prob of each
    span), ``n_bytes`` int64 [m] (bytes per span); ``covered`` = bytes all teachers scored."""

    logp: np.ndarray
    n_bytes: np.ndarray

    @property
    def covered(self) -> int:
        """Bytes from the document start to the last boundary common to all teachers."""
        return int(self.n_bytes.sum())


def span_logprobs(ends: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> Spans:
    """Every teacher's log-prob of every span between boundaries common to all teachers.

    ``ends[t]``: teacher t's token byte end offsets (non-decreasing); ``gold[t]``: its log-prob
    of each gold token. A token ends at or before a common boundary c exactly when its end is
    ``<= c``, so the cumulative gold log-prob at ``searchsorted(ends, c, 'right')`` is the
    log-prob of bytes ``[0, c)``; differences of consecutive ones are the spans. Bytes after the
    last common boundary (a teacher that covers only a prefix) are left out for every teacher.
    """
    if len(ends) != len(gold):
        raise ValueError(f"{len(ends)} byte_ends arrays but {len(gold)} gold log-prob arrays")
    common = common_boundaries(ends)
    rows = []
    for e, g in zip(ends, gold, strict=True):
        e = np.asarray(e, dtype=np.int64)
        if e.shape != np.shape(g):
            raise ValueError(f"byte_ends {e.shape} and gold log-probs {np.shape(g)} differ")
        cum = np.concatenate([[0.0], np.cumsum(np.asarray(g, dtype=np.float64))])
        at = cum[np.searchsorted(e, common, side="right")]
        rows.append(np.diff(np.concatenate([[0.0], at])))
    logp = np.stack(rows) if rows else np.zeros((0, 0))
    return Spans(logp.reshape(len(ends), common.size), np.diff(np.concatenate([[0], common])))


def mix_nll(logp: np.ndarray, weights: np.ndarray) -> float:
    """NLL (nats) of the fixed per-span mixture ``sum_t w_t p_t(span)``; ``logp`` [N, m]."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (logp.shape[0],) or (w < 0).any() or not math.isclose(w.sum(), 1.0, rel_tol=1e-9):
        raise ValueError(f"weights must be {logp.shape[0]} non-negative numbers summing to 1, got {w}")
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    return float(-np.logaddexp.reduce(logw[:, None] + logp, axis=0).sum())


def mix_nll_grid(logp: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """:func:`mix_nll` for every row of ``grid`` [G, N] at once: float64 [G]."""
    with np.errstate(divide="ignore"):
        logw = np.log(grid)  # [G, N]
    return -np.logaddexp.reduce(logw[:, :, None] + logp[None, :, :], axis=1).sum(axis=1)


def sequential_mix_nll(logp: np.ndarray, alpha: float = 0.0, prior: np.ndarray | None = None) -> float:
    """NLL (nats) of the Bayes mixture predicting span by span, optionally with fixed share.

    Before span j the weights are the posterior given spans ``< j`` (each teacher's running
    likelihood of what came before, times the prior); the span's probability is the weighted
    average of the teachers'. ``alpha > 0`` is Herbster & Warmuth's fixed share: after each
    update a fraction ``alpha`` of the weight is spread uniformly again, so the mixture can
    switch to another teacher mid-document. With ``alpha = 0`` the total telescopes to the
    closed form ``-log sum_t prior_t p_t(document)`` (:func:`bayes_closed_nll`). Uses only past
    spans: a proper predictor a student could be distilled towards.
    """
    n = logp.shape[0]
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    logw = np.log(np.full(n, 1.0 / n) if prior is None else np.asarray(prior, dtype=np.float64))
    log_share = math.log(alpha / n) if alpha > 0 else -math.inf
    log_keep = math.log1p(-alpha) if alpha < 1 else -math.inf
    nll = 0.0
    for j in range(logp.shape[1]):
        joint = logw + logp[:, j]
        lp = float(np.logaddexp.reduce(joint))
        nll -= lp
        logw = joint - lp  # posterior after span j
        if alpha > 0:
            logw = np.logaddexp(log_keep + logw, log_share)
    return nll


def bayes_closed_nll(logp: np.ndarray, prior: np.ndarray | None = None) -> float:
    """``-log sum_t prior_t exp(sum_j logp[t, j])``: the per-document Bayes mixture's NLL."""
    n = logp.shape[0]
    lprior = np.log(np.full(n, 1.0 / n) if prior is None else np.asarray(prior, dtype=np.float64))
    return float(-np.logaddexp.reduce(lprior + logp.sum(axis=1)))


def span_winners(logp: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Per span, the teacher with the highest log-prob, or -1 where the best are tied
    (within ``tol`` nats, e.g. a span every teacher predicts with probability ~1): int64 [m]."""
    best = logp.max(axis=0)
    n_best = (logp >= best - tol).sum(axis=0)
    return np.where(n_best == 1, logp.argmax(axis=0), -1).astype(np.int64)


def simplex_grid(n: int, step: float) -> np.ndarray:
    """All weight vectors of ``n`` teachers on a grid of ``step`` (summing to 1): [G, n]."""
    k = round(1.0 / step)
    if not math.isclose(k * step, 1.0):
        raise ValueError(f"step must divide 1, got {step}")

    def rec(left: int, parts: int) -> list[list[int]]:
        if parts == 1:
            return [[left]]
        return [[i, *rest] for i in range(left, -1, -1) for rest in rec(left - i, parts - 1)]

    return np.asarray(rec(k, n), dtype=np.float64) / k


@dataclass(frozen=True)
class DocScore:
    """Every predictor's NLL (nats) on one document and its span statistics.

    ``teachers`` [N]; ``fixed`` the non-fitted predictors by name; ``grid`` [G] the fixed-weight
    mixtures of :func:`simplex_grid`; ``share`` [A] the fixed-share mixtures per alpha;
    ``span_wins`` [N + 1] spans won by each teacher, then ties; ``n_spans``, ``n_bytes``.
    """

    teachers: np.ndarray
    fixed: dict[str, float]
    grid: np.ndarray
    share: np.ndarray
    span_wins: np.ndarray
    n_spans: int
    n_bytes: int


def score_spans(sp: Spans, grid: np.ndarray, alphas: Sequence[float],
                fusion_weights: Callable[[np.ndarray], np.ndarray]) -> DocScore:
    """All predictors on one document's spans (see the module doc of ``complementarity.py``).

    ``fusion_weights`` maps the document's per-teacher BPB [N] to the trainer's fusion weights
    [N] (``bpb_softmax``): they look at the document itself, as the trainer does on its
    training documents, so that row is a distillation target, not a proper predictor.
    """
    lp, n = sp.logp, sp.logp.shape[0]
    nll_t = -lp.sum(axis=1)
    bpb_t = nll_t / LN2 / max(sp.covered, 1)
    fixed = {
        "oracle_document": float(nll_t.min()),
        "oracle_span": float(-lp.max(axis=0).sum()),
        "uniform_span": mix_nll(lp, np.full(n, 1.0 / n)),
        "bayes_document": sequential_mix_nll(lp),
        "fusion_bpb_softmax": mix_nll(lp, fusion_weights(bpb_t)),
    }
    wins = span_winners(lp)
    counts = np.bincount(np.where(wins < 0, n, wins), minlength=n + 1)
    return DocScore(nll_t, fixed, mix_nll_grid(lp, grid),
                    np.array([sequential_mix_nll(lp, a) for a in alphas]), counts,
                    int(lp.shape[1]), sp.covered)


def two_fold_fit(nll: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Cross-fitted choice among candidate columns: per-doc NLL [D] where docs of even index
    get the column best on the odd ones and vice versa; also the two chosen columns."""
    idx = np.arange(nll.shape[0])
    out = np.empty(nll.shape[0])
    chosen = []
    for fold in (0, 1):
        train, test = (idx % 2) != fold, (idx % 2) == fold
        c = int(nll[train].sum(axis=0).argmin()) if train.any() else 0
        out[test] = nll[test, c]
        chosen.append(c)
    return out, chosen
