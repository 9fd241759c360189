"""The crossing price (bench/quality/crossing/crossing.py; issue 31, item 3a) from test BPB paired by seed.

Per seed ``s`` and key (``overall`` = domain-balanced, or a domain), with every BPB the test
BPB at the run's checkpoint chosen on validation:

    gap_shared(s) = kd_shared(s) - ce_shared(s)     # KD's effect, same tokenizer as the teacher
    gap_own(s)    = kd_own(s)    - ce_own(s)        # KD's effect through the byte alignment
    price(s)      = gap_own(s)   - gap_shared(s)    # > 0: crossing tokenizers loses KD gain

Each is reported as its mean over seeds with the 95% Student t interval of the per-seed values
(``transfer_stats.difference``), and ``kept = mean gap_own / mean gap_shared``: the share of the
same-vocabulary KD gain the byte alignment keeps (None where the same-vocabulary KD gains
nothing, ``mean gap_shared >= 0``: there is no gain to keep a share of).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from bench.quality.transfer.transfer_stats import MIN_SEEDS, PILOT, Test, difference

ARMS: dict[str, str] = {
    "ce_shared": "CE only, the student with SmolLM2-135M's own tokenizer",
    "kd_shared": "CE + KD from SmolLM2-135M, same tokenizer: identity map, exact top-k + tail (same_vocab.py), "
                 "debiased chunk term",
    "ce_own": "CE only, the student with its own BPE",
    "kd_own": "CE + KD from SmolLM2-135M through the byte alignment: dense byte-conditional targets, "
              "debiased chunk term",
}


def _by_int_seed(test: Mapping[str, Mapping[Any, Mapping[str, float]]]) -> dict[str, dict[int, dict[str, float]]]:
    """``test`` with integer seeds (a results JSON read back has them as strings)."""
    return {arm: {int(s): dict(v) for s, v in by.items()} for arm, by in test.items()}


def _gaps(test: Test, kd: str, ce: str, seeds: Collection[int]) -> dict[int, dict[str, float]]:
    """seed -> key -> ``kd`` minus ``ce`` over the given seeds both arms finished."""
    ids = [s for s in sorted(set(test.get(kd, {})) & set(test.get(ce, {}))) if s in seeds]
    return {s: {k: test[kd][s][k] - test[ce][s][k] for k in test[ce][s]} for s in ids}


def _kept(own: float | None, shared: float | None) -> float | None:
    if own is None or shared is None or shared >= 0:
        return None
    return own / shared


def price_from_test(test: Test, seeds: Collection[int] | None = None) -> dict[str, Any]:
    """The crossing price from ``test`` (arm -> seed -> {overall, <domain>...} test BPB) over the
    seeds in ``seeds`` (None: every seed all four arms finished)."""
    test = _by_int_seed(test)
    every = set.intersection(*(set(test.get(a, {})) for a in ARMS))
    ids = sorted(every if seeds is None else every & set(seeds))
    gap_shared = _gaps(test, "kd_shared", "ce_shared", ids)
    gap_own = _gaps(test, "kd_own", "ce_own", ids)
    price = difference({"own": gap_own, "shared": gap_shared}, "own", "shared")
    shared = difference(test, "kd_shared", "ce_shared", ids)
    own = difference(test, "kd_own", "ce_own", ids)
    domains = sorted(price["per_domain"])
    n = len(ids)
    return {
        "seeds": n, "seed_ids": ids, "label": PILOT if n < MIN_SEEDS else "result",
        "definition": "(kd_own - ce_own) - (kd_shared - ce_shared) in test BPB, paired by seed; "
                      "> 0: crossing tokenizers loses KD gain",
        "mean": price["mean"], "ci95": price["ci95"], "per_domain": price["per_domain"],
        "kd_minus_ce_shared": {k: shared[k] for k in ("mean", "ci95", "per_domain")},
        "kd_minus_ce_own": {k: own[k] for k in ("mean", "ci95", "per_domain")},
        "kept_fraction": {"overall": _kept(own["mean"], shared["mean"]),
                          **{d: _kept(own["per_domain"][d]["mean"], shared["per_domain"][d]["mean"])
                             for d in domains}},
        "reading": reading(price["ci95"], n),
    }


def reading(ci95: list[float] | None, n: int) -> str:
    """The pre-registered decision rule applied to the overall interval."""
    if n < MIN_SEEDS or ci95 is None:
        return f"{n} seed(s): a {PILOT} (needs >= {MIN_SEEDS})"
    lo, hi = ci95
    if lo > 0:
        return "the byte alignment has a measured price: its 95% interval lies above zero"
    if hi < 0:
        return "crossing does better than the same-vocabulary path: the 95% interval lies below zero"
    return f"no price detectable at this resolution: the 95% interval [{lo:+.4f}, {hi:+.4f}] contains zero"


def crossing_price(results: Mapping[str, Any]) -> dict[str, Any]:
    """``verdict["crossing_price"]`` for bench/results/transfer.json, from this study's results
    (the object crossing.py's report writes to bench/results/transfer_crossing.json, or reads
    back from it): its ``chosen_test`` over its ``seeds_counted`` (None: every finished seed)."""
    out = price_from_test(results["chosen_test"], results.get("seeds_counted"))
    return {**out, "teacher": results.get("teacher", "smollm2-135m"), "source": "bench/results/transfer_crossing.json"}
