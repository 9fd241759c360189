"""Statistics of the fusion study (bench/quality/fusion_pretrained/fusion.py; issue 32, item 4):
the best single-teacher arm chosen on validation, paired differences in test BPB with two
intervals, and the ``proof`` object.

Two sources of error, two intervals, the wider one decides:

- **Seeds** (the training's own noise): every arm of a seed shares the pretrained student, the
  data order and the steps, so a difference is taken seed by seed at each run's checkpoint
  chosen on validation; its 95% interval is the Student t interval of the per-seed differences
  (``proof_stats.paired_interval``).
- **The test set** (which documents happen to be in it): a bootstrap over test documents,
  resampled with replacement within each domain (every domain keeps its document count, so the
  domain-balanced mean stays balanced), the same draw for both arms and every seed; a domain's
  BPB in a draw is its documents' summed NLL over their summed bytes, as the scoring computes
  it; the interval is the 2.5-97.5 percentiles of the seed-mean difference.

The best single-teacher arm is the one with the lowest mean **validation** BPB over the seeds
counted (overall; per domain for the per-domain rows): the test split plays no part in any
choice. ``holds`` (issue 32's "done when"): at least ``MIN_SEEDS`` seeds, fused minus best
single with its interval entirely below zero, and on no domain an interval entirely above zero
(worse than that domain's best single beyond its interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.quality.fusion_proof.proof_stats import OVERALL, chosen, gap_closure, paired_interval

MIN_SEEDS = 3
PILOT = "pilot, not a result"
LN2 = math.log(2.0)
Scores = Mapping[str, Mapping[int, Mapping[str, float]]]  # arm -> seed -> {overall, <domain>...}
DocNll = Mapping[str, Mapping[int, Mapping[str, float]]]  # arm -> seed -> test doc id -> NLL (nats)


@dataclass(frozen=True)
class HeldoutDocs:
    """The test split's documents: each one's domain and UTF-8 bytes."""

    domain: Mapping[str, str]
    n_bytes: Mapping[str, int]


def chosen_field(results: Mapping[str, Mapping[int, Mapping[str, Any]]], field: str) -> dict[str, dict[int, Any]]:
    """arm -> seed -> ``field`` of each run's checkpoint chosen on validation (runs whose chosen
    segment lacks it are left out: e.g. ``test_doc_nll`` of a run scored without documents)."""
    out: dict[str, dict[int, Any]] = {}
    for arm, runs in results.items():
        for seed, run in runs.items():
            if run["segments"] and field in chosen(run["segments"]):
                out.setdefault(arm, {})[seed] = dict(chosen(run["segments"])[field])
    return out


def seed_mean(scores: Scores, arm: str, seeds: Sequence[int], key: str = OVERALL) -> float:
    """Mean of ``scores[arm][seed][key]`` over ``seeds``."""
    return sum(scores[arm][s][key] for s in seeds) / len(seeds)


def best_by_validation(validation: Scores, arms: Sequence[str], seeds: Sequence[int],
                       key: str = OVERALL) -> tuple[str, dict[str, float]]:
    """The arm of ``arms`` with the lowest mean validation BPB (``key``) over ``seeds`` (ties:
    the first listed), and every arm's mean."""
    means = {a: seed_mean(validation, a, seeds, key) for a in arms}
    return min(arms, key=lambda a: means[a]), means


def bootstrap_interval(doc_nll: DocNll, arm: str, reference: str, seeds: Sequence[int], docs: HeldoutDocs,
                       key: str = OVERALL, draws: int = 2000, rng_seed: int = 0,
                       level: float = 0.95) -> list[float]:
    """Percentile interval of ``arm`` minus ``reference`` (test BPB, mean over ``seeds``) under
    resampling the test documents within each domain (``key``: one domain, or ``overall``, the
    mean of the domains' differences)."""
    rng = np.random.default_rng(rng_seed)
    domains = sorted(set(docs.domain.values())) if key == OVERALL else [key]
    total = np.zeros(draws)
    for dom in domains:
        ids = sorted(d for d, x in docs.domain.items() if x == dom)
        counts = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=draws)  # [draws, n]
        n_bytes = counts @ np.array([docs.n_bytes[d] for d in ids], dtype=np.float64)  # [draws]

        def bpb(which: str, counts: np.ndarray = counts, n_bytes: np.ndarray = n_bytes,
                ids: list[str] = ids) -> np.ndarray:
            nll = np.array([[doc_nll[which][s][d] for d in ids] for s in seeds], dtype=np.float64)  # [S, n]
            return (counts @ nll.T) / (LN2 * n_bytes[:, None])  # [draws, S]

        total += (bpb(arm) - bpb(reference)).mean(axis=1)
    diffs = total / len(domains)
    tail = (1.0 - level) / 2 * 100
    return [float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail))]


def compare(test: Scores, doc_nll: DocNll, docs: HeldoutDocs, arm: str, reference: str, seeds: Sequence[int],
            key: str = OVERALL, draws: int = 2000) -> dict[str, Any]:
    """``arm`` minus ``reference`` in test BPB over ``seeds``: the mean, the seeds' t interval
    (None below 2 seeds), the test-document bootstrap interval, and ``ci95``: the wider of the
    two (``interval`` says which)."""
    diffs = [test[arm][s][key] - test[reference][s][key] for s in seeds]
    t_ci = paired_interval(diffs)["ci95"] if len(diffs) >= 2 else None
    boot = bootstrap_interval(doc_nll, arm, reference, seeds, docs, key, draws)
    use_t = t_ci is not None and t_ci[1] - t_ci[0] >= boot[1] - boot[0]
    return {"mean": sum(diffs) / len(diffs), "ci95": t_ci if use_t else boot, "t_ci95": t_ci,
            "bootstrap_ci95": boot, "interval": "t" if use_t else "bootstrap"}


def seeds_needed(sd: float, effect: float = 0.02, level: float = 0.95, most: int = 100) -> int | None:
    """The fewest seeds whose paired t interval's half-width is below ``effect`` for per-seed
    differences of standard deviation ``sd`` (at least 3; None: more than ``most``). The
    bootstrap over test documents does not shrink with seeds: its width is the test set's."""
    from scipy import stats

    for n in range(3, most + 1):
        if float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n) < effect:
            return n
    return None


def build_proof(test: Scores, validation: Scores, doc_nll: DocNll, docs: HeldoutDocs,
                teachers: Mapping[str, Mapping[str, float]], singles: Sequence[str], fused: str, fused_mode: str,
                baseline: str = "a_ce", seeds: Sequence[int] | None = None, student: str = "smollm2-135m",
                draws: int = 2000) -> dict[str, Any]:
    """The top-level ``proof`` of bench/results/fusion_pretrained.json (issue 32, item 4).

    ``test`` / ``validation``: arm -> seed -> BPB at each run's checkpoint chosen on validation;
    ``doc_nll``: arm -> seed -> test document -> NLL at that checkpoint; ``teachers``: teacher
    -> its own test BPB; ``singles``: the single-teacher arms; ``seeds``: only these count (None:
    every seed all compared arms finished; leave out the pilot's)."""
    needed = [*singles, fused, baseline]
    ids = sorted(set.intersection(*(set(test.get(a, {})) & set(doc_nll.get(a, {})) for a in needed)))
    if seeds is not None:
        ids = [s for s in ids if s in set(seeds)]
    if not ids:
        raise ValueError(f"no seed finished every arm of {needed} (with per-document test scores)")
    domains = sorted(k for k in test[fused][ids[0]] if k != OVERALL)
    best, val_means = best_by_validation(validation, singles, ids)
    overall = compare(test, doc_nll, docs, fused, best, ids, OVERALL, draws)
    per_domain = {}
    for dom in domains:
        b, _ = best_by_validation(validation, singles, ids, dom)
        c = compare(test, doc_nll, docs, fused, b, ids, dom, draws)
        per_domain[dom] = {"best_single": b, "diff_mean": c["mean"], "diff_ci95": c["ci95"],
                           "t_ci95": c["t_ci95"], "bootstrap_ci95": c["bootstrap_ci95"], "interval": c["interval"]}
    closure = {key: gap_closure(seed_mean(test, baseline, ids, key), seed_mean(test, fused, ids, key),
                                min(t[key] for t in teachers.values())) for key in (OVERALL, *domains)}
    worse = [d for d, p in per_domain.items() if p["diff_ci95"][0] > 0]
    below = overall["ci95"][1] < 0
    n = len(ids)
    if n < MIN_SEEDS:
        why = f"{n} seed(s): a {PILOT} (needs >= {MIN_SEEDS})"
    elif not below:
        why = f"{fused} minus {best} overall: the 95% interval ({overall['interval']}) does not lie below zero"
    elif worse:
        why = f"{fused} is worse than the domain's best single-teacher arm beyond its interval on {', '.join(worse)}"
    else:
        why = f"{fused} minus {best}: below zero overall ({overall['interval']} interval) and worse on no domain"
    return {"student": student, "seeds": n, "seed_ids": ids, "label": PILOT if n < MIN_SEEDS else "result",
            "best_single": best, "best_single_rule": "lowest mean validation BPB (domain-balanced) over the "
            "seeds counted, among the single-teacher arms", "best_single_validation_bpb": val_means,
            "fused_mode": fused_mode, "fused_arm": fused, "fused_minus_best_single": overall,
            "fused_minus_ce": compare(test, doc_nll, docs, fused, baseline, ids, OVERALL, draws),
            "per_domain": per_domain, "gap_closure": closure,
            "holds": bool(n >= MIN_SEEDS and below and not worse), "why": why}
