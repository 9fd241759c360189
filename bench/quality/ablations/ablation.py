"""Ablations of the quality benchmark: one change at a time against the same corpus and cache.

Each variant is ``bench/quality/ablations/run.py``'s base recipe (same corpus slice, teacher caches,
student size, tokenizer, steps and seed) with some teachers and some ``train`` settings
changed. It is trained and scored on the same held-out documents (bits per byte, live, as
``avokit eval`` scores a student). Several processes may run different variants at once;
each merges its rows into ``--out`` (under a file lock).

    .venv/bin/python -m bench.quality.ablations.ablation --only b_gemma d_both_min_ce --note "..."
"""

from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import time
from pathlib import Path
from typing import Any

from avokit.evaluate.bpb import score_bpb
from avokit.recipe import Recipe
from avokit.teachers.hf import HFTeacher
from avokit.train import run_training
from avokit.train.data import read_split
from avokit.train.run import ensure_student_tokenizer
from bench.provenance import Provenance, git_state
from bench.quality.ablations.run import base_recipe, variant_recipe
from bench.results_io import write_json

BOTH = ["gemma3-270m", "smollm2-135m"]
SEEDS = (1, 2, 3, 4)  # seed replicates of all four variants besides run.py's seed 0
# more seeds of (b) and (d) only: the comparison the seed spread left open at five seeds
BD_SEEDS = (5, 6, 7, 8, 9)

# name -> (teachers, changes to the recipe's ``train`` section (under "teachers": per-teacher
# changes by name), why)
ABLATIONS: dict[str, tuple[list[str], dict[str, Any], str]] = {
    "b_gemma": (["gemma3-270m"], {}, "reference: run.py's (b), retrained here"),
    "c_smollm2": (["smollm2-135m"], {}, "reference: run.py's (c), retrained here"),
    "d_both": (BOTH, {}, "reference: run.py's (d), retrained here"),
    "d_both_min_ce": (BOTH, {"fusion": {"mode": "min_ce"}},
                      "all weight on the teacher with the lower BPB on each document"),
    "d_both_fixed": (BOTH, {"fusion": {"mode": "fixed"}}, "equal weights on every document"),
    "b_gemma_kd_only": (["gemma3-270m"], {"loss": {"chunk_weight": 0.0}}, "token-level term alone"),
    "b_gemma_chunk_only": (["gemma3-270m"], {"loss": {"kd_weight": 0.0}}, "chunk term alone"),
    "c_smollm2_kd_only": (["smollm2-135m"], {"loss": {"chunk_weight": 0.0}}, "token-level term alone"),
    "c_smollm2_chunk_only": (["smollm2-135m"], {"loss": {"kd_weight": 0.0}}, "chunk term alone"),
    "d_both_kd_only": (BOTH, {"loss": {"chunk_weight": 0.0}}, "token-level term alone, fused"),
    "b_gemma_first_token": (["gemma3-270m"], {"loss": {"vocab_map": "first_token"}},
                            "teacher tokens counted for the student token they start with"),
    "c_smollm2_first_token": (["smollm2-135m"], {"loss": {"vocab_map": "first_token"}},
                              "teacher tokens counted for the student token they start with"),
    "d_both_first_token": (BOTH, {"loss": {"vocab_map": "first_token"}},
                           "teacher tokens counted for the student token they start with"),
    # each teacher's term that helped on its own (b: the chunk term, c: the token-level term),
    # at the strength it had alone: equal fixed fusion weights halve a term, so it is doubled
    "d_both_split_terms": (BOTH, {"fusion": {"mode": "fixed"},
                                  "teachers": {"gemma3-270m": {"kd_weight": 0.0, "chunk_weight": 1.0},
                                               "smollm2-135m": {"kd_weight": 2.0, "chunk_weight": 0.0}}},
                           "Gemma's chunk term + SmolLM2's token-level term"),
    # seed replicates of run.py's four variants (the seed sets initial weights and data order)
    **{f"{v}_seed{seed}": (teachers, {"seed": seed}, f"seed replicate of ({v[0]})")
       for seed in SEEDS
       for v, teachers in (("a_ce", BOTH), ("b_gemma", ["gemma3-270m"]), ("c_smollm2", ["smollm2-135m"]),
                           ("d_both", BOTH))},
    **{f"{v}_seed{seed}": (teachers, {"seed": seed}, f"seed replicate of ({v[0]})")
       for seed in BD_SEEDS for v, teachers in (("b_gemma", ["gemma3-270m"]), ("d_both", BOTH))},
}


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied recursively (nested dicts merged, values replaced)."""
    out = dict(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def ablation_recipe(base: Recipe, name: str) -> Recipe:
    """The variant ``name`` of :data:`ABLATIONS` in its own run folder (sharing corpus and cache)."""
    teachers, changes, _ = ABLATIONS[name]
    rec = variant_recipe(base, f"ablation-{name}", teachers, with_teachers_eval=False)
    data = rec.model_dump(mode="json", exclude={"base_dir"})
    changes = dict(changes)
    per_teacher = changes.pop("teachers", {})
    data["train"] = _merge(data["train"], changes)
    data["teachers"] = [_merge(t, per_teacher.get(t["name"], {})) for t in data["teachers"]]
    return Recipe.model_validate({**data, "base_dir": rec.base_dir})


def heldout_bpb(rec: Recipe, model_dir: Path) -> float:
    """Bits per byte of the trained model on the held-out split, scored live."""
    texts = {d.doc_id: d.text for d in read_split(rec.run_dir, "heldout")}
    model = HFTeacher.from_dir(model_dir, name=model_dir.parent.name, device="auto",
                               max_length=rec.eval.max_length)
    try:
        return score_bpb(model, texts, batch_size=rec.eval.batch_size).bpb
    finally:
        model.close()


def _fmt(values: list[float], stat: Any, at_least: int = 1) -> str:
    return f"{stat(values):.4f}" if len(values) >= at_least else ""


def sign_flip_p(diffs: list[float]) -> float:
    """Exact two-sided p-value of a paired sign-flip permutation test (no distribution assumed).

    Under "no difference" every paired difference is as likely negative as positive: the
    p-value is the share of the 2**n sign patterns whose mean is at least as far from zero.
    With n pairs it cannot go below 2 / 2**n (0.0625 for five seeds).
    """
    n = len(diffs)
    observed = abs(sum(diffs))
    hits = sum(1 for mask in range(2**n)
               if abs(sum(-d if mask >> i & 1 else d for i, d in enumerate(diffs))) >= observed - 1e-12)
    return hits / 2**n


def seed_table(result: dict[str, Any], seed0: dict[str, float]) -> str:
    """Held-out BPB of the four variants per seed, their means, and paired differences.

    ``seed0`` holds run.py's seed-0 results (its ``rows``); a seed-0 retrain here wins over them.
    Paired differences compare variants trained with the same seed (same initial weights and
    data order), which cancels much of the seed-to-seed spread.
    """
    variants = ("a_ce", "b_gemma", "c_smollm2", "d_both")
    rows = result["rows"]
    per: dict[str, dict[int, float]] = {v: {} for v in variants}
    for v in variants:
        if v in seed0:
            per[v][0] = seed0[v]
        if v in rows:
            per[v][0] = rows[v]["bpb"]
        for seed in (*SEEDS, *BD_SEEDS):
            if f"{v}_seed{seed}" in rows:
                per[v][seed] = rows[f"{v}_seed{seed}"]["bpb"]
    seeds = sorted({s for v in variants for s in per[v]})
    common = [s for s in seeds if all(s in per[v] for v in variants)]  # seeds all four have
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean, seeds all four have | sd | mean, all its seeds |",
             "| --- |" + " ---: |" * (len(seeds) + 3)]
    for v in variants:
        vals = [per[v].get(s) for s in seeds]
        shared = [per[v][s] for s in common]
        every = list(per[v].values())
        lines.append(f"| {v} | " + " | ".join("" if x is None else f"{x:.4f}" for x in vals)
                     + f" | {_fmt(shared, statistics.mean)} | {_fmt(shared, statistics.stdev, 2)} "
                     f"| {_fmt(every, statistics.mean)} ({len(every)}) |")
    lines += ["", "Paired by seed, d_both minus each variant (negative: d is better):", "",
              "| d minus | per seed | mean | sd | d better on | sign-flip p (two-sided) |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for v in variants[:-1]:
        paired = [s for s in seeds if s in per[v] and s in per["d_both"]]
        diffs = [per["d_both"][s] - per[v][s] for s in paired]
        if not diffs:
            continue
        sd = f"{statistics.stdev(diffs):.4f}" if len(diffs) > 1 else ""
        lines.append(f"| {v} | {', '.join(f'{d:+.4f}' for d in diffs)} | {statistics.mean(diffs):+.4f} "
                     f"| {sd} | {sum(d < 0 for d in diffs)} of {len(diffs)} | {sign_flip_p(diffs):.3f} |")
    return "\n".join(lines) + "\n"


def render(result: dict[str, Any], seed0: dict[str, float] | None = None) -> str:
    """The ablation rows as a Markdown table (and the seed table when seed-0 results are given)."""
    lines = ["# Quality ablations: one change at a time", "",
             f"Config: {result['config']}.", "", *([result["note"], ""] if result.get("note") else []),
             "| variant | teachers | train changes | held-out BPB | train wall s | why |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {', '.join(row['teachers'])} | `{json.dumps(row['changes'])}` | "
                     f"{row['bpb']:.4f} | {row['train_s']} | {row['why']} |")
    if seed0 is not None:
        lines += ["", "## Seeds: the four variants of run.py, one row each (held-out BPB)", "",
                  "Seed 0 of (a) and (c) is run.py's run; (b) and (d) were retrained here with seed 0 "
                  "(run.py's own values: b 1.9021, d 1.9333).", "", seed_table(result, seed0)]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Train and score the chosen ablations; merge them into the results file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", required=True, choices=sorted(ABLATIONS))
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-quality"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/quality-ablation"))
    ap.add_argument("--note", default="")
    ap.add_argument("--seed0", type=Path, default=Path("bench/results/quality-two-teachers.json"),
                    help="run.py's results: seed 0 of the variants not retrained here")
    args = ap.parse_args()
    base = base_recipe(args.runs.resolve(), args.docs, args.steps, items=1)
    ensure_student_tokenizer(base)  # the variants link to it: it must exist first
    rows: dict[str, Any] = {}
    for name in args.only:
        rec = ablation_recipe(base, name)
        baseline = name.startswith("a_ce")  # CE only: the teachers are listed but unused
        if baseline and (rec.run_dir / "baseline").is_symlink():
            (rec.run_dir / "baseline").unlink()  # this variant trains its own baseline
        start = time.perf_counter()
        model_dir = run_training(rec, baseline=baseline, progress=False)
        train_s = round(time.perf_counter() - start, 1)
        teachers, changes, why = ABLATIONS[name]
        rows[name] = {"teachers": [] if baseline else teachers, "changes": changes, "why": why,
                      "bpb": heldout_bpb(rec, model_dir), "train_s": train_s}
        print(f"[ablation] {name}: {rows[name]}", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = args.out.with_suffix(".json")
        result = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
        result["config"] = {"docs": args.docs, "steps": args.steps}
        if args.note:
            result["note"] = args.note
        result["rows"].update(rows)
        # rows accumulate over processes: keep the commits of earlier ones, add this one's
        old = result.pop("provenance", None) or {}
        training = {k: v["commits"] for k, v in old.get("training", {}).items()}
        commit = git_state()[0]
        training.update({name: [*training.get(name, []), commit] for name in rows})
        corpus = base.run_dir / "corpus" / "manifest.json"
        write_json(path, result, Provenance.collect(dtype="float32", corpus=corpus, training=training))
        seed0 = _seed0(args.seed0)
        args.out.with_suffix(".md").write_text(render(result, seed0))
    args.out.with_suffix(".lock").unlink(missing_ok=True)
    print(render(result, seed0))


def _seed0(path: Path) -> dict[str, float] | None:
    """run.py's held-out BPB per variant from its results file (None when it is absent)."""
    if not path.is_file():
        return None
    return {k: v["bpb"] for k, v in json.loads(path.read_text())["rows"].items() if not k.startswith("teacher:")}


if __name__ == "__main__":
    main()
