"""The transfer benchmark (issue 31, item 2): does KD from a stronger teacher, across
tokenizers, make a competent pretrained student better than CE alone?

Student: SmolLM2-135M from its own pretrained weights and tokenizer (the registry's float32
copy), trained in float32 on the CPU. Teachers: Gemma 3 270M and Qwen2.5-Coder-0.5B, captured
by avokit's normal capture (top-k 32). Corpus: ``transfer.yaml`` (English passages, Python
files, Chinese reviews; split by source text into train / validation / held-out = test).

Arms (``ARMS``, one line each; identical initial weights, data order per seed and steps):
``start`` the untouched student (scored, not trained), ``ce`` CE only, ``kd_gemma`` /
``kd_qwen`` CE + KD from one teacher with avokit's alignment (dense byte-conditional targets,
debiased chunk term), ``uld_gemma`` the same with ULD as the token-level term. Every run
trains in segments of ``--segment-steps`` at a constant learning rate after warmup; after
each segment the student is scored in memory (bits per byte from its own log-probs, per
domain and domain-balanced) on validation and test. The checkpoint is chosen on validation
and reported on test; ``report`` pairs the arms by seed (transfer_stats.py).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.transfer.transfer prepare
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.transfer.transfer train --steps 80 \\
        --seeds 0 1 2 --arms start ce kd_gemma    # one process per arm list; resumable
    .venv/bin/python -m bench.quality.transfer.transfer report   # bench/results/transfer.{json,md}

Layout under ``--runs`` (default runs/bench-transfer): ``data/`` (corpus, caches, data.json),
``settings.json`` (shared by every run), ``<arm>/s<seed>/`` (the run: ``segments.json`` with
each segment's scores, ``run.json`` with what each process ran on). A killed ``train``
continues from its last scored segment; ``--steps`` may be raised later (every run then
trains on; runs with fewer segments are reported as unfinished).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from avokit.recipe import Recipe
from bench.provenance import Provenance
from bench.quality.fusion_proof import proof
from bench.quality.fusion_proof.proof import _drop_unscored_checkpoints, _split_texts, score
from bench.quality.fusion_proof.proof_stats import (
    OVERALL,
    chosen,
    chosen_test_bpb,
    paired_differences,
)
from bench.quality.transfer.transfer_data import (
    GEMMA,
    QWEN,
    STUDENT,
    TEACHERS,
    _write_json,
    capture,
    data_recipe,
    prepare,
    set_inside_top_k,
    student_dir,
)
from bench.quality.transfer.transfer_render import render
from bench.quality.transfer.transfer_stats import build_verdict, curves, equal_steps
from bench.results_io import write_results

ROOT = Path(__file__).resolve().parents[3]
CROSSING = ROOT / "bench" / "results" / "transfer_crossing.json"  # item 3a's study (crossing.py)
# avokit's own alignment as in the pilot: byte-conditional dense targets + debiased chunk term
AVOKIT = {"targets": "dense", "chunk_debias": True}
# the second test's configuration: both gates, both teacher terms at half weight
BOTH_GATES_HALF = {**AVOKIT, "kd_gate": "teacher_better", "chunk_gate": "teacher_better", "kd_weight": 0.5,
                   "chunk_weight": 0.25}
# name -> (teachers, changes to the recipe's train section (None: not trained), what it is)
ARMS: dict[str, tuple[list[str], dict[str, Any] | None, str]] = {
    "start": ([], None, "the pretrained student, untouched (scored, not trained)"),
    "ce": ([], {}, "CE only (the baseline)"),
    "kd_gemma": ([GEMMA], {"loss": AVOKIT}, "CE + KD from Gemma alone, avokit's alignment (dense, debiased chunk)"),
    "kd_qwen": ([QWEN], {"loss": AVOKIT}, "CE + KD from Qwen alone, avokit's alignment (dense, debiased chunk)"),
    "uld_gemma": ([GEMMA], {"loss": {**AVOKIT, "token_loss": "uld"}},
                  "CE + ULD from Gemma: as kd_gemma, ULD as the token-level term"),
    # pilot arms for item 3c (the loss), seed 0 only until one is pre-registered
    "kd_gemma_nochunk": ([GEMMA], {"loss": {**AVOKIT, "chunk_weight": 0.0}},
                         "CE + KD from Gemma, dense targets, no chunk term"),
    "kd_gemma_gated": ([GEMMA], {"loss": {**AVOKIT, "kd_gate": "teacher_better"}},
                       "CE + KD from Gemma, dense targets and chunk term, KD only where it raises gold"),
    "kd_gemma_gated_nochunk": ([GEMMA], {"loss": {**AVOKIT, "kd_gate": "teacher_better", "chunk_weight": 0.0}},
                               "CE + KD from Gemma, dense targets, KD only where it raises gold, no chunk term"),
    "kd_gemma_gated_half": ([GEMMA], {"loss": {**AVOKIT, "kd_gate": "teacher_better", "kd_weight": 0.5,
                                                "chunk_weight": 0.25}},
                            "CE + KD from Gemma, gated, both teacher terms at half weight"),
    "kd_gemma_gated_both": ([GEMMA], {"loss": {**AVOKIT, "kd_gate": "teacher_better", "chunk_gate": "teacher_better"}},
                            "CE + KD from Gemma, token and chunk terms only where they raise the gold text"),
    "kd_gemma_gated_both_half": ([GEMMA], {"loss": BOTH_GATES_HALF},
                                 "CE + KD from Gemma, token and chunk terms gated, both at half weight"),
    "kd_qwen_gated_both_half": ([QWEN], {"loss": BOTH_GATES_HALF},
                                "CE + KD from Qwen, token and chunk terms gated, both at half weight"),
    "kd_qwen_gated": ([QWEN], {"loss": {**AVOKIT, "kd_gate": "teacher_better"}},
                      "CE + KD from Qwen, dense targets and chunk term, KD only where it raises gold"),
    # not trained by default: ULD in the field's own form (GOLD), at common token boundaries only
    "uld_gemma_boundary": ([GEMMA], {"loss": {"token_loss": "uld", "chunk_weight": 0.0}},
                           "CE + ULD from Gemma at common boundaries, no chunk term (the field's form)"),
}
DEFAULT_ARMS = ["start", "ce", "kd_gemma", "kd_qwen", "uld_gemma"]
# the verdict's comparisons (issue 31, item 5): each teacher's KD arm against CE; ULD against
# avokit's token term at the same positions and chunk term. "pilot": the arms of seed 0
# (2026-12-06/07); "test": pre-registered in PREREGISTERED.md (2026-12-07) for seeds 1-3, the
# gated KD arm having the lowest validation BPB of the pilot's Gemma arms
DESIGNS: dict[str, tuple[dict[str, str], tuple[str, str, str]]] = {
    "pilot": ({GEMMA: "kd_gemma", QWEN: "kd_qwen"}, ("uld_gemma", "kd_gemma", GEMMA)),
    "test": ({GEMMA: "kd_gemma_gated", QWEN: "kd_qwen_gated"}, ("uld_gemma", "kd_gemma_gated", GEMMA)),
    # the second test (prefix cuts, both gates, half weight): Gemma only; ULD stays the first test's
    "cuts": ({GEMMA: "kd_gemma_gated_both_half"}, ("uld_gemma", "kd_gemma_gated_both_half", GEMMA)),
    # the third test (60 steps, checkpoints chosen on validation): Gemma only; ULD stays the first test's
    "long": ({GEMMA: "kd_gemma_gated_half"}, ("uld_gemma", "kd_gemma_gated_half", GEMMA)),
    # the fourth test (replication of the third's arms on 5 fresh seeds, 40 steps): as "long"
    "replication": ({GEMMA: "kd_gemma_gated_half"}, ("uld_gemma", "kd_gemma_gated_half", GEMMA)),
}
VERDICT_KD, VERDICT_ULD = DESIGNS["pilot"]
SHARED = ("segment_steps", "batch_size", "seq_len", "lr", "warmup", "score_max_length", "mixed_precision")


def _link(target: Path, link: Path) -> None:
    """proof's link, also when the link is there but its target not yet (a capture still to run)."""
    if not link.is_symlink():
        proof._link(target, link)


def provenance(runs: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """What a process ran on: commit, dtype, CPU, threads, the corpus manifest's hash."""
    import torch

    prov = Provenance.collect(dtype="float32" if settings["mixed_precision"] == "no" else settings["mixed_precision"],
                              corpus=runs / "data" / "corpus" / "manifest.json")
    return {**prov.model_dump(exclude={"training", "corpus_sha256"}), "device": "cpu", "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load": os.getloadavg()[0],
            "corpus_manifest_sha256": prov.corpus_sha256,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def lock_settings(runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The training settings every run shares, recorded by the first ``train``; a later one with
    other settings is refused, except ``--steps``, which may be raised (runs then train on)."""
    path = runs / "settings.json"
    saved = json.loads(path.read_text()) if path.is_file() else None
    steps = args.steps if args.steps is not None else (saved or {}).get("steps")
    if steps is None:
        raise SystemExit("train: give --steps (the first train of these runs records it)")
    mine = {"steps": steps, "segment_steps": args.segment_steps, "batch_size": args.batch_size,
            "seq_len": args.seq_len, "lr": args.lr, "warmup": args.warmup,
            "score_max_length": args.score_max_length, "mixed_precision": "no"}
    if steps % args.segment_steps:
        raise SystemExit(f"--steps {steps} is not a multiple of --segment-steps {args.segment_steps}")
    if saved is not None:
        diff = {k: (saved.get(k), mine[k]) for k in SHARED if saved.get(k) != mine[k]}
        if diff:
            raise SystemExit(f"{path}: these runs were trained with other settings (saved, given): {diff}")
        if steps < saved["steps"]:
            raise SystemExit(f"{path}: --steps {steps} below the {saved['steps']} recorded; runs only grow")
    _write_json(path, mine)
    return mine


def arm_recipe(runs: Path, arm: str, seed: int, settings: dict[str, Any]) -> Recipe:
    """The recipe of one (arm, seed) run, its corpus and caches linked to ``runs/data``."""
    teachers, changes, _ = ARMS[arm]
    train: dict[str, Any] = {
        "seed": seed, "steps": settings["steps"], "batch_size": settings["batch_size"],
        "seq_len": settings["seq_len"], "lr": settings["lr"], "warmup_steps": settings["warmup"],
        "min_lr_ratio": 1.0, "mixed_precision": settings["mixed_precision"],
        "checkpoint_every": settings["segment_steps"], "eval_every": 10**9, "log_every": 10}
    for key, val in (changes or {}).items():
        train[key] = {**train.get(key, {}), **val} if isinstance(val, dict) else val
    data = data_recipe(runs)
    folder = str(student_dir())
    rec = Recipe.model_validate({
        "name": f"s{seed}", "runs_dir": str((runs / arm).resolve()), "base_dir": ROOT,
        "corpus": data.corpus.model_dump(mode="json"),
        # the CE baseline trains without teachers; a recipe still names one
        "teachers": [data.teacher(t).model_dump(mode="json") for t in (teachers or TEACHERS[:1])],
        "student": {"pretrained": folder, "tokenizer": {"kind": "path", "path": folder}}, "train": train})
    _link(runs / "data" / "corpus", rec.run_dir / "corpus")
    for t in teachers:
        _link(runs / "data" / "cache" / t, rec.run_dir / "cache" / t)
    return rec


def _record(runs: Path, run_dir: Path, arm: str, seed: int, settings: dict[str, Any], rec: Recipe | None) -> None:
    """Append this process's provenance to the run's ``run.json`` (written on every start)."""
    path = run_dir / "run.json"
    old = json.loads(path.read_text()) if path.is_file() else {"processes": []}
    data = json.loads((runs / "data" / "data.json").read_text())
    start = runs / "start" / "scores.json"
    _write_json(path, {"arm": arm, "seed": seed, "what": ARMS[arm][2], "teachers": ARMS[arm][0],
                       "student": data["student_dir"], "train": rec.train.model_dump(mode="json") if rec else None,
                       "teachers_test_bpb": data["teachers_test_bpb"],
                       "start_test_bpb": json.loads(start.read_text())["test"] if start.is_file() else None,
                       "processes": [*old["processes"], provenance(runs, settings)]})


def split_scores(model: Any, tokenizer: Any, runs: Path, max_length: int) -> dict[str, Any]:
    """Validation and test (held-out) BPB of ``model``, per domain, with the wall time and load."""
    t0 = time.perf_counter()
    out = {split: score(model, tokenizer, *_split_texts(runs, name), max_length=max_length)
           for split, name in (("validation", "validation"), ("test", "heldout"))}
    return {**out, "score_wall_s": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0]}


def score_start(runs: Path, seeds: list[int], settings: dict[str, Any]) -> dict[str, Any]:
    """The untouched student, scored once (it is the same for every seed), one step-0 segment
    per seed so that it pairs like any arm."""
    path = runs / "start" / "scores.json"
    if not path.is_file():
        from avokit.recipe.student import StudentConfig
        from avokit.student import build_student, load_student_tokenizer

        tok = load_student_tokenizer(student_dir())
        model = build_student(StudentConfig.model_validate({"pretrained": student_dir()}), tok)
        _write_json(path, {"step": 0, "train_wall_s": 0.0,
                           **split_scores(model, tok, runs, settings["score_max_length"])})
    scores = json.loads(path.read_text())
    for seed in seeds:
        run_dir = runs / "start" / f"s{seed}"
        if not (run_dir / "segments.json").is_file():
            _record(runs, run_dir, "start", seed, settings, None)
            _write_json(run_dir / "segments.json", [scores])
    return scores


def scored_training(rec: Recipe, baseline: bool, segments: list[dict[str, Any]], wanted: int,
                    scores: Callable[[Any], dict[str, Any]], label: str) -> None:
    """Train ``rec`` (resuming), scoring the model at every checkpoint into ``segments`` (written
    to ``rec.run_dir/segments.json`` each time; a step scored before a restart is not redone);
    refuses a run that ends with fewer than ``wanted`` segments. Shared by the crossing study."""
    from avokit.train import run_training

    log_path = rec.run_dir / "segments.json"
    clock = [time.perf_counter()]

    def on_checkpoint(step: int, model: Any) -> None:
        wall = time.perf_counter() - clock[0]  # the first segment's includes the run's setup
        if all(s["step"] != step for s in segments):
            segments.append({"step": step, "train_wall_s": round(wall, 1), **scores(model)})
            segments.sort(key=lambda s: s["step"])
            _write_json(log_path, segments)
            print(f"{label} step {step}: validation {segments[-1]['validation'][OVERALL]:.4f} ({wall:.0f} s)",
                  flush=True)
        clock[0] = time.perf_counter()

    run_training(rec, baseline=baseline, progress=False, on_checkpoint=on_checkpoint)
    if len(segments) < wanted:
        raise SystemExit(f"{rec.run_dir}: training finished with {len(segments)} of {wanted} segments scored; "
                         f"delete {rec.run_dir} to train it again")


def train_arm(runs: Path, arm: str, seed: int, settings: dict[str, Any], keep_checkpoints: bool = False) -> None:
    """Train one (arm, seed), scoring the student after every segment; resumable per segment."""
    import shutil

    from avokit.student import load_student_tokenizer

    rec = arm_recipe(runs, arm, seed, settings)
    baseline = not ARMS[arm][0]
    ckpt = rec.run_dir / ("baseline" if baseline else "student") / "checkpoints"
    log_path = rec.run_dir / "segments.json"
    segments: list[dict[str, Any]] = json.loads(log_path.read_text()) if log_path.is_file() else []
    wanted = settings["steps"] // settings["segment_steps"]
    if len(segments) < wanted:
        _record(runs, rec.run_dir, arm, seed, settings, rec)
        _drop_unscored_checkpoints(ckpt, segments[-1]["step"] if segments else 0)
        tokenizer = load_student_tokenizer(student_dir())
        scored_training(rec, baseline, segments, wanted, lambda model: split_scores(
            model, tokenizer, runs, settings["score_max_length"]), f"[transfer] {arm} seed {seed}")
    if not keep_checkpoints:  # the scores are in segments.json; a checkpoint is ~1.6 GB
        shutil.rmtree(ckpt, ignore_errors=True)


def collect(runs: Path, settings: dict[str, Any]) -> tuple[dict[str, dict[int, Any]], list[str]]:
    """Every finished run (arm -> seed -> {segments, run}) and the unfinished ones' names."""
    results: dict[str, dict[int, Any]] = {}
    unfinished: list[str] = []
    wanted = settings["steps"] // settings["segment_steps"]
    for arm, (_, changes, _) in ARMS.items():
        for seg_file in sorted((runs / arm).glob("s*/segments.json"), key=lambda p: int(p.parent.name[1:])):
            segments = json.loads(seg_file.read_text())
            run_file = seg_file.with_name("run.json")
            if changes is not None and len(segments) < wanted:
                unfinished.append(f"{arm}/{seg_file.parent.name} ({len(segments)} of {wanted} segments)")
                continue
            # a run trained further than these settings is read up to them
            segments = [s for s in segments if s["step"] <= settings["steps"]]
            results.setdefault(arm, {})[int(seg_file.parent.name[1:])] = {
                "segments": segments, "run": json.loads(run_file.read_text()) if run_file.is_file() else None}
    return results, unfinished


def report(runs: Path, out: Path, seeds: list[int] | None, design: str = "pilot",
           crossing: Path = CROSSING) -> dict[str, Any]:
    """Choose checkpoints on validation, pair the arms by seed, write JSON + Markdown; the
    verdict compares the arms of ``design`` (``DESIGNS``) and carries the crossing study's
    price from ``crossing`` (its results JSON) when that exists."""
    settings = json.loads((runs / "settings.json").read_text())
    data = json.loads((runs / "data" / "data.json").read_text())
    results, unfinished = collect(runs, settings)
    test = chosen_test_bpb(results)
    if seeds is not None:
        test = {arm: {s: v for s, v in by.items() if s in seeds} for arm, by in test.items()}
    teachers = data["teachers_test_bpb"]
    kd_arms, uld = DESIGNS[design]
    verdict = build_verdict(test, teachers, kd_arms, uld, GEMMA, seeds=seeds, student=STUDENT)
    verdict["design"] = design
    verdict["equal_steps"] = equal_steps(results, kd_arms, settings["steps"], seeds=seeds)  # no checkpoint chosen
    if crossing.is_file():  # item 3a, its own study (crossing.py): carried into the verdict as it stands
        from bench.quality.crossing.crossing_stats import crossing_price

        verdict["crossing_price"] = crossing_price(json.loads(crossing.read_text()))
        verdict["crossing_price_note"] = verdict["crossing_price"]["reading"]
    procs = [p for by in results.values() for r in by.values() if r["run"] for p in r["run"]["processes"]]
    records = {k: sorted({str(p.get(k)) for p in procs}) for k in ("commit", "dtype", "cpu", "corpus_manifest_sha256")}
    trained = settings["steps"] * settings["batch_size"] * settings["seq_len"]
    result: dict[str, Any] = {
        "verdict": verdict, "settings": settings, "seeds_counted": seeds,
        "arms": {a: {"teachers": t, "train": c, "what": w} for a, (t, c, w) in ARMS.items()},
        "teachers_test_bpb": teachers, "teacher_caches": data.get("teacher_caches"),
        "start_test_bpb": next(iter(test.get("start", {}).values()), None),
        "chosen_test": test,
        "chosen_step": {a: {s: chosen(r["segments"])["step"] for s, r in by.items()} for a, by in results.items()},
        "paired_vs_ce": {a: paired_differences(test, a, "ce") for a in ARMS if a != "ce"},
        "curves": curves(results),
        "budget": {"tokens_per_run": trained, "train_tokens": data["student_tokens"]["train"]["total"],
                   "epochs": trained / data["student_tokens"]["train"]["total"]},
        "records": records, "corpus_manifest_sha256_now": data["corpus_manifest_sha256"],
        "data": {k: data[k] for k in ("student", "student_dir", "student_tokens", "created")},
        "corpus": {k: data["corpus"][k] for k in ("documents", "domains", "domain_texts", "domain_bytes")},
        "runs": results, "unfinished": unfinished,
    }
    training = {f"{a}/seed{s}": [str(p.get("commit")) for p in r["run"]["processes"]]
                for a, by in results.items() for s, r in by.items() if r["run"]}
    write_results(out, result, render(result), Provenance.collect(
        dtype="float32" if settings["mixed_precision"] == "no" else settings["mixed_precision"],
        corpus=runs / "data" / "corpus" / "manifest.json", training=training))
    return result


def main() -> None:
    """prepare | capture | train | report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["prepare", "capture", "train", "report"])
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-transfer"))
    ap.add_argument("--teacher", choices=TEACHERS, help="capture: the one teacher this process captures")
    ap.add_argument("--teachers", nargs="+", default=TEACHERS, choices=TEACHERS, help="prepare: capture these")
    ap.add_argument("--inside-top-k", type=int, default=None,
                    help="prepare: capture prefix cuts of this width (capture.inside_top_k) for these runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="train: these seeds (default 0 1 2); report: count only these (default: all finished)")
    ap.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    ap.add_argument("--steps", type=int, default=None, help="train: total steps per run (default: as recorded)")
    ap.add_argument("--segment-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--score-max-length", type=int, default=512,
                    help="student scoring window in tokens (the teachers' capture max_length)")
    ap.add_argument("--keep-checkpoints", action="store_true", help="train: keep each finished run's checkpoints")
    ap.add_argument("--out", type=Path, default=Path("bench/results/transfer"))
    ap.add_argument("--design", choices=list(DESIGNS), default="pilot",
                    help="report: which arms the verdict compares (test: the pre-registered ones)")
    args = ap.parse_args()
    if args.command == "prepare":
        if args.inside_top_k is not None:
            set_inside_top_k(args.runs, args.inside_top_k)
        print(json.dumps(prepare(args.runs, args.teachers), indent=1, default=str)[:4000])
    elif args.command == "capture":
        if not args.teacher:
            raise SystemExit("capture: give --teacher")
        capture(args.runs, args.teacher)
    elif args.command == "train":
        if not (args.runs / "data" / "data.json").is_file():
            raise SystemExit(f"{args.runs}/data/data.json missing: run `transfer.py prepare` first")
        settings = lock_settings(args.runs, args)
        seeds = args.seeds if args.seeds is not None else [0, 1, 2]
        score_start(args.runs, seeds, settings)  # every run records the start's scores beside its own
        for seed in seeds:  # seed-major: paired results accumulate seed by seed
            for arm in args.arms:
                if ARMS[arm][1] is not None:
                    train_arm(args.runs, arm, seed, settings, args.keep_checkpoints)
    else:
        print(json.dumps(report(args.runs, args.out, args.seeds, args.design)["verdict"], indent=1))


if __name__ == "__main__":
    main()
