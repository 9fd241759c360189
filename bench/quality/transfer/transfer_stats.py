"""The transfer benchmark's verdict (bench/quality/transfer/transfer.py; issue 31, item 5): KD minus CE
per teacher, ULD minus avokit's alignment, and whether the claim holds.

Every arm of a seed shares the pretrained student, the data order and the steps, so a
difference between two arms is taken seed by seed (paired) at each run's checkpoint chosen on
validation; its 95% interval is the Student t interval of the per-seed differences
(``proof_stats.paired_interval``). Test BPB is per domain and domain-balanced (``overall``).

The claim (issue 31): for Gemma, KD minus CE has its 95% interval below zero overall and on
every domain where Gemma's own test BPB is better than the untouched student's (``start``).
Fewer than ``MIN_SEEDS`` seeds are a pilot, not a result: ``holds`` is then false whatever the
numbers say.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from bench.quality.fusion_proof.proof_stats import OVERALL, paired_interval

MIN_SEEDS = 3
PILOT = "pilot, not a result"
Test = Mapping[str, Mapping[int, Mapping[str, float]]]  # arm -> seed -> {overall, <domain>...}


def _interval(diffs: list[float]) -> dict[str, Any]:
    """Mean and 95% t interval; the interval is None below 2 seeds (no spread to measure)."""
    if not diffs:
        return {"mean": None, "ci95": None}
    return {"mean": sum(diffs) / len(diffs),
            "ci95": paired_interval(diffs)["ci95"] if len(diffs) >= 2 else None}


def difference(test: Test, arm: str, reference: str, seeds: Collection[int] | None = None) -> dict[str, Any]:
    """``arm`` minus ``reference`` in test BPB over the seeds both finished (and in ``seeds``
    when given): ``{"seeds": [...], "mean", "ci95", "per_domain": {domain: {"mean", "ci95"}}}``."""
    ids = sorted(set(test.get(arm, {})) & set(test.get(reference, {})))
    if seeds is not None:
        ids = [s for s in ids if s in set(seeds)]
    if not ids:
        return {"seeds": [], "mean": None, "ci95": None, "per_domain": {}}
    keys = [k for k in test[reference][ids[0]] if k != OVERALL]

    def diffs(key: str) -> list[float]:
        return [test[arm][s][key] - test[reference][s][key] for s in ids]

    return {"seeds": ids, **_interval(diffs(OVERALL)), "per_domain": {k: _interval(diffs(k)) for k in sorted(keys)}}


def seed_mean(test: Test, arm: str) -> dict[str, float] | None:
    """Mean test BPB of ``arm`` over its seeds, per key; None when it has none."""
    runs = list(test.get(arm, {}).values())
    if not runs:
        return None
    return {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}


def better_than_start(teacher_bpb: Mapping[str, float], start: Mapping[str, float] | None) -> list[str] | None:
    """The domains where the teacher's own test BPB is below the untouched student's (None:
    ``start`` not scored yet, so the domains the claim covers are unknown)."""
    if start is None:
        return None
    return sorted(d for d in start if d != OVERALL and d in teacher_bpb and teacher_bpb[d] < start[d])


def _below_zero(x: Mapping[str, Any] | None) -> bool:
    return x is not None and bool(x) and x.get("ci95") is not None and x["ci95"][1] < 0


def build_verdict(test: Test, teachers: Mapping[str, Mapping[str, float]], kd_arms: Mapping[str, str],
                  uld: tuple[str, str, str], holds_teacher: str, baseline: str = "ce", start: str = "start",
                  seeds: Collection[int] | None = None, student: str = "smollm2-135m") -> dict[str, Any]:
    """The top-level ``verdict`` of bench/results/transfer.json.

    ``test``: arm -> seed -> test BPB at the chosen checkpoint; ``teachers``: teacher -> its own
    test BPB (from its cache); ``kd_arms``: teacher -> the arm that distils it alone (CE + KD);
    ``uld``: (ULD arm, the avokit arm it is compared with, their teacher); ``holds_teacher``: the
    teacher the claim is about; ``seeds``: only these seeds count (None: every finished seed;
    leave out the seeds of a pilot). ``seeds`` in the verdict = seeds the claim's comparison
    (``holds_teacher``'s KD arm against the baseline) is paired over.
    """
    start_bpb = seed_mean(test, start)
    per_teacher: dict[str, Any] = {}
    for teacher, arm in kd_arms.items():
        diff = difference(test, arm, baseline, seeds)
        per_teacher[teacher] = {
            "arm": arm, "seeds": len(diff["seeds"]), "seed_ids": diff["seeds"],
            "kd_minus_ce": {"mean": diff["mean"], "ci95": diff["ci95"]}, "per_domain": diff["per_domain"],
            "teacher_test_bpb": dict(teachers.get(teacher, {})),
            "teacher_better_than_start": better_than_start(teachers.get(teacher, {}), start_bpb)}
    uld_arm, ref_arm, uld_teacher = uld
    u = difference(test, uld_arm, ref_arm, seeds)
    uld_minus = {"teacher": uld_teacher, "arm": uld_arm, "reference": ref_arm, "seeds": len(u["seeds"]),
                 "seed_ids": u["seeds"], "mean": u["mean"], "ci95": u["ci95"], "per_domain": u["per_domain"]}
    claim = per_teacher[holds_teacher]
    n = claim["seeds"]
    domains = claim["teacher_better_than_start"]
    failing = [] if domains is None else [d for d in domains if not _below_zero(claim["per_domain"].get(d))]
    meets = domains is not None and _below_zero(claim["kd_minus_ce"]) and not failing
    if n < MIN_SEEDS:
        why = f"{n} paired seed(s) of {claim['arm']} and {baseline}: a {PILOT} (needs >= {MIN_SEEDS})"
    elif domains is None:
        why = f"{start} not scored: the domains where {holds_teacher} beats the start are unknown"
    elif not _below_zero(claim["kd_minus_ce"]):
        why = f"{claim['arm']} minus {baseline} overall: the 95% interval does not lie below zero"
    elif failing:
        why = (f"{claim['arm']} minus {baseline}: the 95% interval does not lie below zero on "
               f"{', '.join(failing)} ({holds_teacher} is better than the start there)")
    else:
        why = (f"{claim['arm']} minus {baseline}: the 95% interval lies below zero overall and on every domain "
               f"where {holds_teacher} beats the start ({', '.join(domains) or 'none'})")
    return {"student": student, "seeds": n, "label": PILOT if n < MIN_SEEDS else "result",
            "per_teacher": per_teacher, "uld_minus_avokit": uld_minus, "crossing_price": None,
            "crossing_price_note": "not measured yet (issue 31, item 3a: the same teacher into a student "
                                   "that shares its tokenizer against one that does not)",
            "holds": bool(meets and n >= MIN_SEEDS), "holds_teacher": holds_teacher, "why": why}


def equal_steps(runs: Mapping[str, Mapping[int, Mapping[str, Any]]], arms: Mapping[str, str], step: int,
                baseline: str = "ce", seeds: Collection[int] | None = None) -> dict[str, Any]:
    """Each teacher's KD arm minus ``baseline`` in test BPB at one ``step`` for both (no checkpoint
    chosen: equal steps and data order), paired by seed as :func:`difference`."""
    test = {arm: {seed: dict(seg["test"]) for seed, run in by.items() for seg in run["segments"]
                  if int(seg["step"]) == step} for arm, by in runs.items()}
    out: dict[str, Any] = {"step": step, "per_teacher": {}}
    for teacher, arm in arms.items():
        diff = difference(test, arm, baseline, seeds)
        out["per_teacher"][teacher] = {"arm": arm, "seeds": len(diff["seeds"]), "seed_ids": diff["seeds"],
                                       "kd_minus_ce": {"mean": diff["mean"], "ci95": diff["ci95"]},
                                       "per_domain": diff["per_domain"]}
    return out


def curves(runs: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, dict[int, dict[str, Any]]]:
    """arm -> step -> mean validation and test BPB (domain-balanced) over the seeds scored at
    that step, and how many: whether the curves have flattened."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for arm, seeds in runs.items():
        by_step: dict[int, list[Mapping[str, Any]]] = {}
        for run in seeds.values():
            for seg in run["segments"]:
                by_step.setdefault(int(seg["step"]), []).append(seg)
        out[arm] = {step: {"validation": sum(s["validation"][OVERALL] for s in segs) / len(segs),
                           "test": sum(s["test"][OVERALL] for s in segs) / len(segs), "seeds": len(segs)}
                    for step, segs in sorted(by_step.items())}
    return out
