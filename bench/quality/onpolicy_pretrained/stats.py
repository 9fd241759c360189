"""The on-policy study's numbers, pure functions: the metrics of one evaluation, the checkpoint
at equal wall-clock time, the paired verdict, the pilot's choice and each arm's cost.

**Primary metric** (``teacher_judged_bpb``): the student continues held-out prompts (fixed
sampling settings and seed), each teacher measures the bits per byte of what it wrote
(:mod:`bench.quality.onpolicy.onpolicy_eval`), per domain; the metric is the mean over the
domains (every domain weighs the same, as the test BPB's ``overall``) of the mean over the two
teachers. Lower is better. Test BPB is the framework's domain-balanced test BPB of the same
checkpoint (``test_bpb``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.quality.fusion_pretrained.fusion_stats import seeds_needed
from bench.quality.onpolicy.onpolicy_metrics import paired_diff, pooled_bpb

PRIMARY = "teacher_judged_bpb"
BPB = "test_bpb"
Points = Mapping[str, Mapping[int, Mapping[str, float]]]  # point name -> seed -> metric -> value


def eval_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """The flat metrics of one evaluation: ``teacher_judged_bpb``, ``judged:<domain>`` (mean
    over teachers), ``judged_by:<teacher>`` (domain-balanced), the pooled ``teacher_nll`` of
    issue 16, ``distinct2`` / ``distinct3``."""
    by_teacher = evaluation["teacher_bpb"]
    domains = sorted({d for t in by_teacher.values() for d in t if d != "pooled"})
    per_domain = {d: statistics.fmean(t[d] for t in by_teacher.values() if d in t) for d in domains}
    out = {PRIMARY: statistics.fmean(per_domain.values()), "teacher_nll": evaluation["teacher_nll"],
           "distinct2": evaluation["distinct2"], "distinct3": evaluation["distinct3"]}
    out.update({f"judged:{d}": v for d, v in per_domain.items()})
    out.update({f"judged_by:{name}": statistics.fmean(v for d, v in t.items() if d != "pooled")
                for name, t in by_teacher.items()})
    return out


def _judged(rows: Sequence[Mapping[str, Any]], pick: np.ndarray, teachers: Sequence[str]) -> float:
    """The primary metric over the prompts ``rows[pick]`` (a prompt drawn twice counts twice)."""
    by_domain: dict[str, list[float]] = {}
    for dom in sorted({rows[i]["domain"] for i in pick}):
        mine = [rows[i] for i in pick if rows[i]["domain"] == dom]
        parts = {t: [(r["bits"][t], r["bytes"][t]) for r in mine if t in r["bits"]] for t in teachers}
        by_domain[dom] = [pooled_bpb(v) for v in parts.values() if sum(n for _, n in v)]
    return statistics.fmean(statistics.fmean(v) for v in by_domain.values() if v)


def sampling_noise(variant: Mapping[str, Any], reference: Mapping[str, Any], draws: int = 2000,
                   seed: int = 0) -> dict[str, Any] | None:
    """Within one seed: ``variant`` minus ``reference`` on the primary metric, and how much of
    it the choice of prompts alone could make: a paired bootstrap over the evaluation prompts
    (documents resampled within each domain, each with all its samples, the same draw for both
    points; sd and 95% percentile interval). Its sd is a floor under the seed-to-seed spread of a paired difference. None
    when either evaluation has no ``per_prompt`` or their prompts differ."""
    a, b = variant.get("per_prompt"), reference.get("per_prompt")
    if not a or not b or [r["doc_id"] for r in a] != [r["doc_id"] for r in b]:
        return None
    teachers = sorted(variant["teacher_bpb"])
    rng = np.random.default_rng(seed)
    # documents are resampled, each with all its draws ('<doc_id>#<k>': several per prompt)
    rows_of: dict[str, list[int]] = {}
    for i, r in enumerate(a):
        rows_of.setdefault(r["doc_id"].split("#", 1)[0], []).append(i)
    strata = [[d for d in rows_of if a[rows_of[d][0]]["domain"] == dom] for dom in sorted({r["domain"] for r in a})]
    full = np.arange(len(a))
    diffs = []
    for _ in range(draws):
        pick = np.array([i for docs in strata for j in rng.integers(0, len(docs), len(docs))
                         for i in rows_of[docs[j]]])
        diffs.append(_judged(a, pick, teachers) - _judged(b, pick, teachers))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"mean": _judged(a, full, teachers) - _judged(b, full, teachers), "sd": float(np.std(diffs, ddof=1)),
            "ci95": [float(lo), float(hi)], "draws": draws}


def segment_metrics(segment: Mapping[str, Any], split: str = "test") -> dict[str, float]:
    """A scored segment's BPB as ``<split>_bpb`` (domain-balanced) and ``<split>_bpb:<domain>``."""
    scores = segment[split]
    return {f"{split}_bpb": scores["overall"], **{f"{split}_bpb:{d}": v for d, v in scores.items() if d != "overall"}}


def train_seconds(segments: Sequence[Mapping[str, Any]], up_to: int | None = None) -> float:
    """Train wall seconds of a run up to step ``up_to`` (every segment: None)."""
    return sum(s["train_wall_s"] for s in segments if up_to is None or s["step"] <= up_to)


def equal_time(offline: Sequence[Mapping[str, Any]], budget_s: float) -> dict[str, Any]:
    """The offline checkpoint whose cumulative train wall time is the closest to ``budget_s``
    without being above it (step 0, the shared start, when even its first segment took
    longer); ``offline_shorter``: offline's last checkpoint is below the budget (more
    ``--offline-steps`` would have been compared)."""
    step, used, total = 0, 0.0, 0.0
    for seg in sorted(offline, key=lambda s: s["step"]):
        total += seg["train_wall_s"]
        if total <= budget_s:
            step, used = seg["step"], total
    return {"step": step, "offline_train_s": round(used, 1), "budget_s": round(budget_s, 1),
            "offline_shorter": total < budget_s}


def _holds(seeds: int, primary: dict[str, Any] | None, bpb: dict[str, Any] | None) -> tuple[bool, str]:
    if seeds < 3:
        return False, "at least 3 paired seeds are needed"
    if primary is None or primary["ci95"][1] >= 0:
        return False, "the on-offline interval on the primary metric does not lie below zero"
    if bpb is None or bpb["ci95"][0] > 0:
        return False, "test BPB is worse beyond its interval (on-offline interval above zero)"
    return True, "on-policy beats offline on the primary metric, test BPB not worse beyond its interval"


def verdict(points: Points, equal_time_steps: Mapping[int, Mapping[str, Any]], bpb: str = BPB) -> dict[str, Any]:
    """The issue's ``verdict``: ``on`` / ``seq`` minus ``offline`` at equal steps on the
    primary metric, ``on`` minus ``offline`` on ``bpb`` (test BPB; a pilot's: validation), the
    same at equal wall time (``offline@on_time``: ``equal_time_steps`` says which checkpoint,
    per seed), paired by seed with t intervals. ``holds``: >= 3 seeds, the primary interval
    entirely below zero and the BPB interval not entirely above zero (equal steps; equal time
    is reported beside it)."""
    seeds = sorted(set(points.get("on", {})) & set(points.get("offline", {})))
    on = paired_diff(points, "on", "offline", PRIMARY)
    worse = paired_diff(points, "on", "offline", bpb)
    holds, why = _holds(len(seeds), on, worse)
    return {"seeds": len(seeds), "primary": PRIMARY, "on_minus_offline": on,
            "seq_minus_offline": paired_diff(points, "seq", "offline", PRIMARY), "bpb_on_minus_offline": worse,
            "equal_time": {"on_minus_offline": paired_diff(points, "on", "offline@on_time", PRIMARY),
                           "bpb_on_minus_offline": paired_diff(points, "on", "offline@on_time", bpb),
                           "per_seed": {s: dict(v) for s, v in sorted(equal_time_steps.items())}},
            "bpb": bpb, "holds": holds, "why": why}


def per_domain(points: Points, arm: str, reference: str, domains: Sequence[str], bpb: str = BPB) -> dict[str, Any]:
    """``arm`` minus ``reference`` per domain: judged BPB and ``bpb``, paired by seed."""
    return {d: {"judged": paired_diff(points, arm, reference, f"judged:{d}"),
                "bpb": paired_diff(points, arm, reference, f"{bpb}:{d}")} for d in domains}


def pilot_choice(points: Points, candidates: Sequence[str], effect: float = 0.02) -> dict[str, Any]:
    """On validation (pilot evaluations): each on-policy candidate minus ``offline`` at equal
    steps, mean over the pilot seeds; the chosen one has the lowest judged BPB (on validation
    prompts); for the pre-registration, the spread of its paired differences and the seeds
    that spread needs for a t half-width below ``effect``."""
    rows: dict[str, dict[str, Any]] = {}
    for arm in candidates:
        seeds = sorted(set(points.get(arm, {})) & set(points.get("offline", {})))
        if not seeds:
            continue
        diffs = [points[arm][s][PRIMARY] - points["offline"][s][PRIMARY] for s in seeds]
        bpb = [points[arm][s]["validation_bpb"] - points["offline"][s]["validation_bpb"] for s in seeds]
        sd = statistics.stdev(diffs) if len(diffs) >= 2 else None
        rows[arm] = {"seeds": seeds, "judged_minus_offline": statistics.fmean(diffs),
                     "validation_bpb_minus_offline": statistics.fmean(bpb), "sd_of_paired_differences": sd,
                     f"seeds_needed_for_{effect}": seeds_needed(sd, effect) if sd else None}
    chosen = min(rows, key=lambda a: rows[a]["judged_minus_offline"]) if rows else None
    return {"candidates": rows, "chosen": chosen, "rule": "lowest mean judged BPB minus offline, validation prompts"}


def cost(segments: Sequence[Mapping[str, Any]], log: Sequence[Mapping[str, Any]], batch: int, seq_len: int,
         steps: int, added: bool = False) -> dict[str, Any]:
    """One run's cost over its first ``steps`` steps: train wall seconds (setup included,
    scoring excluded) per step, tokens trained per second (an on-policy micro-batch counts the
    tokens of its samples instead of ``batch * seq_len``, or beside them when the samples'
    loss is ``added`` to the corpus rows'), and the on-policy micro-batches' seconds sampling
    and in each teacher's live scoring, with their share of the train wall time."""
    wall = train_seconds(segments, steps)
    lines = [r.get("on_policy") or {} for r in log if r["step"] <= steps]
    micro = sum(x.get("micro_batches", 0) for x in lines)
    sample_s = sum(x.get("sample_s", 0.0) for x in lines)
    score: dict[str, float] = {}
    for x in lines:
        for name, s in x.get("score_s", {}).items():
            score[name] = score.get(name, 0.0) + s
    tokens = (steps - (0 if added else micro)) * batch * seq_len + sum(x.get("tokens", 0) for x in lines)
    return {"steps": steps, "train_wall_s": round(wall, 1), "s_per_step": wall / steps if steps else None,
            "tokens": tokens, "tokens_per_s": tokens / wall if wall else None, "on_policy_micro_batches": micro,
            "written_tokens": sum(x.get("written_tokens", 0) for x in lines), "sample_s": round(sample_s, 1),
            "score_s": {k: round(v, 1) for k, v in score.items()},
            "sampling_share": sample_s / wall if wall else None,
            "scoring_share": sum(score.values()) / wall if wall else None}
