"""Statistics of the fusion proof (bench/quality/fusion_proof/proof.py): checkpoint choice on validation,
paired differences over seeds with t intervals, gap closure, and the ``proof`` object.

Every variant of a seed shares that seed's initial weights and data order, so a difference
between two variants is taken seed by seed (paired); its 95% interval is the Student t
interval of the per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats

OVERALL = "overall"  # the domain-balanced test BPB: every domain weighs the same


def paired_interval(diffs: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences and its two-sided t interval (``ci95``: [lo, hi])."""
    n = len(diffs)
    if n < 2:
        raise ValueError(f"a paired interval needs at least 2 seeds, got {n}")
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "sd": sd, "n": n}


def chosen(segments: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The evaluation point with the lowest validation BPB (domain-balanced); ties: earliest."""
    if not segments:
        raise ValueError("no evaluated checkpoint to choose from")
    return min(segments, key=lambda s: (s["validation"][OVERALL], s["step"]))


def gap_closure(ce: float, student: float, best_teacher: float) -> float | None:
    """(BPB_CE - BPB_student) / (BPB_CE - BPB_best_teacher); None when CE already matches it."""
    return (ce - student) / (ce - best_teacher) if ce != best_teacher else None


def chosen_test_bpb(results: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, dict[int, dict[str, float]]]:
    """variant -> seed -> {overall, <domain>...}: test BPB at each run's chosen checkpoint."""
    return {v: {seed: dict(chosen(run["segments"])["test"]) for seed, run in runs.items() if run["segments"]}
            for v, runs in results.items()}


def paired_differences(test: Mapping[str, Mapping[int, Mapping[str, float]]], variant: str,
                       reference: str) -> dict[str, Any] | None:
    """``variant`` minus ``reference`` per key (overall and each domain) over the seeds both
    finished, with t intervals; None with fewer than 2 shared seeds."""
    seeds = sorted(set(test.get(variant, {})) & set(test.get(reference, {})))
    if len(seeds) < 2:
        return None
    keys = list(test[reference][seeds[0]])
    return {"seeds": seeds, **{k: paired_interval([test[variant][s][k] - test[reference][s][k] for s in seeds])
                               for k in keys}}


def build_proof(test: Mapping[str, Mapping[int, Mapping[str, float]]], singles: Sequence[str], fused: str,
                baseline: str, teachers: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The ``proof`` object of bench/results/quality.json.

    Only seeds every compared variant finished count. ``teachers``: teacher -> {overall,
    <domain>...} test BPB. Best single = the single-teacher variant with the lowest mean
    overall test BPB; each domain is compared with that domain's best single variant.
    """
    needed = [*singles, fused, baseline]
    seeds = sorted(set.intersection(*(set(test.get(v, {})) for v in needed)))
    if len(seeds) < 2:
        raise ValueError(f"{len(seeds)} seed(s) finished every variant of {needed}; need at least 2")

    def mean(v: str, key: str) -> float:
        return sum(test[v][s][key] for s in seeds) / len(seeds)

    def diff(v: str, key: str) -> dict[str, Any]:
        return paired_interval([test[fused][s][key] - test[v][s][key] for s in seeds])

    domains = sorted(k for k in test[fused][seeds[0]] if k != OVERALL)
    best = min(singles, key=lambda v: mean(v, OVERALL))
    per_domain = {}
    for dom in domains:
        b = min(singles, key=lambda v: mean(v, dom))
        d = diff(b, dom)
        per_domain[dom] = {"best_single": b, "diff_mean": d["mean"], "diff_ci95": d["ci95"]}
    closure = {key: gap_closure(mean(baseline, key), mean(fused, key), min(t[key] for t in teachers.values()))
               for key in (OVERALL, *domains)}
    overall = diff(best, OVERALL)
    return {"seeds": len(seeds), "seed_ids": seeds, "best_single": best, "fused": fused,
            "fused_minus_best_single": {"mean": overall["mean"], "ci95": overall["ci95"]},
            "per_domain": per_domain, "gap_closure": closure,
            "holds": overall["ci95"][1] < 0 and all(p["diff_ci95"][0] <= 0 for p in per_domain.values())}
