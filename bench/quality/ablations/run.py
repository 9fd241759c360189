"""The quality benchmark: does multi-teacher distillation beat each single teacher and plain CE?

Four students with identical data, steps, seed, size and tokenizer:
  (a) CE only   (b) KD from Gemma 3 270M   (c) KD from SmolLM2-135M   (d) KD from both, fused
plus both teachers, all scored identically on the held-out split (bits per byte) and on
ARC-Easy and PIQA (accuracy with 95% Wilson intervals). The corpus and the teacher cache are
built once and shared (symlinks), so the variants differ only in which teachers they learn from.

    .venv/bin/python -m bench.quality.ablations.run                      # the full run (~1 h on 2 CPU cores)
    .venv/bin/python -m bench.quality.ablations.run --docs 60 --steps 20 --items 20 --out /tmp/q   # smoke run

Writes OUT.json and OUT.md (default bench/results/quality).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from avokit.capture import run_capture
from avokit.corpus import build_corpus, load_split
from avokit.evaluate import run_eval
from avokit.recipe import Recipe, load_recipe
from avokit.train import run_training
from bench.provenance import Provenance
from bench.quality.ablations.ensemble import ensemble_bpb
from bench.quality.ablations.ensemble import render as render_ensemble
from bench.results_io import write_json

VARIANTS = {"b_gemma": ["gemma3-270m"], "c_smollm2": ["smollm2-135m"], "d_both": ["gemma3-270m", "smollm2-135m"]}


def base_recipe(runs: Path, docs: int, steps: int, items: int) -> Recipe:
    """avocado-mini on a larger corpus slice, under its own runs folder."""
    rec = load_recipe("avocado-mini")
    data = rec.model_dump(mode="json", exclude={"base_dir"})
    data["name"] = "quality-base"
    data["runs_dir"] = str(runs)
    data["corpus"]["sources"] = [{"kind": "builtin", "name": "lambada-passages", "max_docs": docs}]
    data["train"]["steps"] = steps
    data["train"]["batch_size"] = 8  # as when bench/results/quality.* were measured (avocado-mini now uses 4)
    data["eval"]["max_items"] = items
    data["eval"]["include_teachers"] = False
    return Recipe.model_validate({**data, "base_dir": Path.cwd()})


def variant_recipe(base: Recipe, name: str, teachers: list[str], with_teachers_eval: bool) -> Recipe:
    """The base recipe restricted to ``teachers``, in a run dir that shares corpus, cache,
    tokenizer and the CE-only baseline with the base run."""
    data = base.model_dump(mode="json", exclude={"base_dir"})
    data["name"] = f"quality-{name}"
    data["teachers"] = [t for t in data["teachers"] if t["name"] in teachers]
    data["eval"]["include_teachers"] = with_teachers_eval
    rec = Recipe.model_validate({**data, "base_dir": base.base_dir})
    rec.run_dir.mkdir(parents=True, exist_ok=True)
    (rec.run_dir / "cache").mkdir(exist_ok=True)
    links = {"corpus": base.run_dir / "corpus", "tokenizer": base.run_dir / "tokenizer",
             "baseline": base.run_dir / "baseline"}
    links.update({f"cache/{t}": base.run_dir / "cache" / t for t in teachers})
    for rel, target in links.items():
        link = rec.run_dir / rel
        if not link.exists():
            link.symlink_to(target.resolve(), target_is_directory=True)
    return rec


def timed(label: str, fn, walls: dict[str, float | str]):
    start = time.perf_counter()
    out = fn()
    walls[label] = round(time.perf_counter() - start, 1)
    print(f"[quality] {label}: {walls[label]} s", flush=True)
    return out


def main() -> None:
    """Run the four variants and write the results."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-quality"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/quality-two-teachers"))
    ap.add_argument("--note", default="", help="free text written into the results (e.g. machine load)")
    args = ap.parse_args()

    walls: dict[str, float | str] = {}
    base = base_recipe(args.runs.resolve(), args.docs, args.steps, args.items)
    timed("corpus", lambda: build_corpus(base), walls)
    for t in base.teachers:
        if (base.run_dir / "cache" / t.name / "manifest.json").is_file():
            # captured by an earlier (killed or sharded) process: say so rather than log ~0 s
            walls[f"capture:{t.name}"] = "reused (captured before this process)"
            continue
        timed(f"capture:{t.name}", lambda t=t: run_capture(base, teacher=t.name), walls)
    timed("train:a_ce", lambda: run_training(base, baseline=True, progress=False), walls)
    reports: dict[str, dict] = {}
    for name, teachers in VARIANTS.items():
        rec = variant_recipe(base, name, teachers, with_teachers_eval=(name == "d_both"))
        timed(f"train:{name}", lambda rec=rec: run_training(rec, progress=False), walls)
        report = timed(f"eval:{name}", lambda rec=rec: run_eval(rec), walls)
        reports[name] = json.loads((Path(report) / "metrics.json").read_text())

    d = reports["d_both"]
    rows: dict[str, dict] = {"a_ce": {"bpb": d["bpb"]["baseline"]["bpb"], "tasks": d["tasks"]["baseline"]}}
    for name, rep in reports.items():
        rows[name] = {"bpb": rep["bpb"]["student"]["bpb"], "tasks": rep["tasks"]["student"]}
    for t in base.teachers:
        rows[f"teacher:{t.name}"] = {"bpb": d["bpb"][t.name]["bpb"], "tasks": d["tasks"].get(t.name, {})}
    best_teacher = min(rows[f"teacher:{t.name}"]["bpb"] for t in base.teachers)
    ce = rows["a_ce"]["bpb"]
    for name in ("a_ce", *VARIANTS):
        rows[name]["gap_closure"] = (ce - rows[name]["bpb"]) / (ce - best_teacher) if ce != best_teacher else None

    names = (base.teachers[0].name, base.teachers[1].name)
    heldout_ids = [d.doc_id for d in load_split(base, "heldout")]
    mixture = ensemble_bpb(base.run_dir, names, base.train.fusion.temperature, heldout_ids)
    result = {
        "machine": {"nproc": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "config": {"docs": args.docs, "steps": args.steps, "items": args.items,
                   "student": base.student.model_dump(mode="json"), "train": base.train.model_dump(mode="json")},
        "heldout": d["heldout"], "rows": rows, "wall_s": walls, "note": args.note,
        "teacher_mixture": {"teachers": names, "temperature": base.train.fusion.temperature, **mixture},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), result,
               Provenance.collect(dtype="float32", corpus=base.run_dir / "corpus" / "manifest.json"))
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result))


def _acc(tasks: dict, name: str) -> str:
    acc = tasks.get(name, {}).get("acc")
    if not acc:
        return "-"
    low, high = acc["ci95"]
    return f"{acc['value']:.3f} [{low:.3f}, {high:.3f}] n={acc['n']}"


def render(result: dict) -> str:
    """The results as a Markdown table."""
    lines = ["# Quality: multi-teacher distillation vs single teachers vs CE only", "",
             f"Machine: {result['machine']}. Config: {result['config']['docs']} docs, "
             f"{result['config']['steps']} steps, {result['config']['items']} items per task. "
             f"Held-out: {result['heldout']}.", "",
             *([result["note"], ""] if result.get("note") else []),
             "| model | held-out BPB | gap closure | ARC-Easy acc [95% CI] | PIQA acc [95% CI] |",
             "| --- | ---: | ---: | --- | --- |"]
    for name, row in result["rows"].items():
        gc = row.get("gap_closure")
        lines.append(f"| {name} | {row['bpb']:.4f} | {'' if gc is None else f'{gc:.3f}'} | "
                     f"{_acc(row['tasks'], 'arc_easy')} | {_acc(row['tasks'], 'piqa')} |")
    mix = result["teacher_mixture"]
    lines += ["", "Gap closure = (BPB_CE - BPB_student) / (BPB_CE - BPB_best_teacher).", "",
              "What fusing the teachers could give at best (bench/quality/ablations/ensemble.py: both teachers' "
              "held-out log-probs mixed at their common token boundaries):", "",
              render_ensemble(mix, tuple(mix["teachers"]), mix["temperature"]),
              "| stage | wall s |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in result["wall_s"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
