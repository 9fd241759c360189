"""``report``: the evaluated points paired by seed, the verdict, the cost of each arm and a few
side-by-side samples, written as ``<out>.json`` and ``<out>.md`` (bench/results_io) with the
provenance of the report and of every counted run."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.provenance import Provenance
from bench.quality.onpolicy_pretrained.arms import (
    ON_ARMS,
    SEQDATA,
    TRAINED,
    WARM,
    Options,
    arm_steps,
    arm_table,
)
from bench.quality.onpolicy_pretrained.evaluation import SPLIT, eval_file, points
from bench.quality.onpolicy_pretrained.render import render
from bench.quality.onpolicy_pretrained.stats import (
    BPB,
    PRIMARY,
    cost,
    equal_time,
    eval_metrics,
    per_domain,
    pilot_choice,
    sampling_noise,
    segment_metrics,
    train_seconds,
    verdict,
)
from bench.quality.onpolicy_pretrained.training import finished
from bench.quality.study.study import run_records
from bench.results_io import write_results

SHOWN = ("start", "offline", "on", "seq")  # the side-by-side samples' columns


def seeds_found(runs: Path, seeds: list[int] | None) -> list[int]:
    """The seeds whose start was scored (``start/s<seed>``), those of ``seeds`` only if given."""
    found = sorted(int(p.name[1:]) for p in (runs / "start").glob("s*") if p.name[1:].isdigit())
    return [s for s in found if seeds is None or s in seeds]


def collect(runs: Path, opts: Options, settings: dict[str, Any], seeds: list[int],
            design: str) -> tuple[dict[str, dict[int, Any]], dict[str, dict[int, Any]], dict[int, Any], list[str]]:
    """(point -> seed -> metrics, point -> seed -> evaluation, seed -> equal-time choice of
    ``on``, the points not yet evaluated)."""
    metrics: dict[str, dict[int, Any]] = {}
    evals: dict[str, dict[int, Any]] = {}
    timing: dict[int, Any] = {}
    missing = []
    for seed in seeds:
        for name, (arm, step) in points(runs, opts, settings, seed).items():
            path = eval_file(runs, opts, arm, seed, step, design)
            if not path.is_file():
                missing.append(f"{name} seed {seed} ({path})")
                continue
            evaluation = json.loads(path.read_text())
            segs = finished(runs, opts, settings, arm, seed) or []
            seg = next(s for s in segs if s["step"] == step)
            metrics.setdefault(name, {})[seed] = {**eval_metrics(evaluation), **segment_metrics(seg, "validation"),
                                                  **(segment_metrics(seg, "test") if design == "test" else {})}
            evals.setdefault(name, {})[seed] = evaluation
        on, offline = (finished(runs, opts, settings, a, seed) for a in ("on", "offline"))
        if on and offline:
            timing[seed] = {"on_train_s": round(train_seconds(on), 1),
                            **equal_time(offline, train_seconds(on))}
    return metrics, evals, timing, missing


def costs(runs: Path, opts: Options, settings: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """Per trained arm: each seed's :func:`stats.cost` and their means; plus the one-off cost of
    the teacher-written text (seqdata/seq.json)."""
    out: dict[str, Any] = {}
    table = arm_table(opts)
    for arm in TRAINED:
        mine = arm_steps(opts, settings, arm)
        added = ((table[arm][1] or {}).get("on_policy") or {}).get("combine") == "add"
        per_seed = {}
        for seed in seeds:
            segs = finished(runs, opts, settings, arm, seed) if arm != WARM or opts.start_steps else None
            log = runs / arm / f"s{seed}" / "student" / "train_log.jsonl"
            if segs and log.is_file():
                lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
                per_seed[seed] = cost(segs, lines, settings["batch_size"], settings["seq_len"], mine["steps"], added)
        if per_seed:
            keys = ("s_per_step", "tokens_per_s", "sampling_share", "scoring_share")
            out[arm] = {"per_seed": per_seed, "mean": {k: statistics.fmean(c[k] for c in per_seed.values())
                                                       for k in keys if all(c[k] is not None for c in per_seed.values())}}
    seq = runs / SEQDATA / "seq.json"
    out["seq_data"] = json.loads(seq.read_text()) if seq.is_file() else None
    return out


def samples(evals: dict[str, dict[int, Any]]) -> dict[str, Any]:
    """Side by side, for the first seed with every shown point: per domain, each prompt kept and
    what ``start``, ``offline``, ``on`` and ``seq`` wrote after it."""
    shown = [p for p in SHOWN if p in evals]
    seeds = sorted(set.intersection(*(set(evals[p]) for p in shown))) if shown else []
    if not seeds:
        return {}
    seed = seeds[0]
    rows: dict[str, list[dict[str, Any]]] = {}
    for kept in evals[shown[0]][seeds[0]]["samples"]:
        by_point = {p: next((x for x in evals[p][seed]["samples"] if x["doc_id"] == kept["doc_id"]), None)
                    for p in shown}
        rows.setdefault(kept["domain"], []).append({
            "doc_id": kept["doc_id"], "prompt": kept["text"][:kept.get("prompt_chars", 0)],
            **{p: x["text"][x.get("prompt_chars", 0):] for p, x in by_point.items() if x is not None}})
    return {"seed": seed, "domains": rows}


def within_seed(evals: dict[str, dict[int, Any]]) -> dict[str, dict[int, Any]]:
    """Per trained arm and seed, its difference from ``offline`` (equal steps) on the primary
    metric with the part the prompts alone could make (:func:`stats.sampling_noise`)."""
    out: dict[str, dict[int, Any]] = {}
    for arm in (*ON_ARMS, "seq"):
        for seed in sorted(set(evals.get(arm, {})) & set(evals.get("offline", {}))):
            noise = sampling_noise(evals[arm][seed], evals["offline"][seed])
            if noise is not None:
                out.setdefault(arm, {})[seed] = noise
    return out


def report(runs: Path, out: Path, opts: Options, seeds: list[int] | None, design: str = "test") -> dict[str, Any]:
    """Collect, pair and write ``out``.json / .md; the verdict (design ``test``) or the
    pilot's choice and a pilot-labelled verdict on validation (design ``pilot``)."""
    for need in (runs / "settings.json", runs / "data" / "data.json"):
        if not need.is_file():
            raise SystemExit(f"report: {need} missing (--runs {runs}: run `prepare`, `train` and `evaluate` first)")
    settings = json.loads((runs / "settings.json").read_text())
    data = json.loads((runs / "data" / "data.json").read_text())
    counted = seeds_found(runs, seeds)
    metrics, evals, timing, missing = collect(runs, opts, settings, counted, design)
    bpb = BPB if design == "test" else "validation_bpb"
    domains = sorted(k.split(":", 1)[1] for k in next(iter(metrics.get("on", {}).values()), {}) if
                     k.startswith("judged:"))
    runs_read = {a: {s: {"run": json.loads(p.read_text())} for s in counted
                     if (p := runs / a / f"s{s}" / "run.json").is_file()} for a in ("start", *TRAINED)}
    records, training = run_records(runs_read)
    result: dict[str, Any] = {
        "verdict": verdict(metrics, timing, bpb), "design": design, "split": SPLIT[design],
        "label": "test" if design == "test" else "pilot: validation prompts and validation BPB, not a test",
        "options": opts.__dict__, "settings": settings, "seeds_counted": counted,
        "arms": {a: w for a, (_, _, w) in arm_table(opts).items()},
        "per_domain": {f"{a}_minus_offline": per_domain(metrics, a, "offline", domains, bpb) for a in ("on", "seq")},
        "pilot": pilot_choice(metrics, ON_ARMS) if design == "pilot" else None,
        "means": {p: {k: statistics.fmean(m[k] for m in by.values()) for k in (PRIMARY, bpb, "distinct2", "distinct3")}
                  for p, by in metrics.items()},
        "sampling_noise": within_seed(evals), "points": metrics, "equal_time": timing, "cost": costs(runs, opts, settings, counted),
        "samples": samples(evals), "missing": missing, "records": records,
        "teachers_test_bpb": data["teachers_test_bpb"], "data": str((runs / "data").resolve()),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_results(out, result, render(result), Provenance.collect(
        dtype="float32", corpus=runs / "data" / "corpus" / "manifest.json", training=training))
    return result
