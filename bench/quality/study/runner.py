"""Training and scoring of a study's runs (bench/quality/study/study.py): the untouched
student scored once, and every (arm, seed) trained in segments with the student scored in
memory after each one (validation and test BPB, per domain and domain-balanced), resumable
per segment. Shared by the transfer, fusion and crossing studies."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avokit.recipe import Recipe
from bench.quality.fusion_proof.proof import (
    _drop_unscored_checkpoints,
    _split_texts,
    domain_scores,
    student_bpb,
)
from bench.quality.fusion_proof.proof_stats import OVERALL
from bench.quality.study.data import _write_json
from bench.quality.study.study import Study, arm_recipe, record_run

SPLITS = (("validation", "validation"), ("test", "heldout"))  # (name in the scores, corpus split)


def split_scores(model: Any, tokenizer: Any, runs: Path, max_length: int) -> dict[str, Any]:
    """Validation and test (held-out) BPB of ``model``, per domain, with the wall time and load."""
    t0 = time.perf_counter()
    out = {}
    for split, name in SPLITS:
        texts, domains = _split_texts(runs, name)
        out[split] = domain_scores(student_bpb(model, tokenizer, texts, max_length), texts, domains)
    return {**out, "score_wall_s": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0]}


def document_scores(model: Any, tokenizer: Any, runs: Path, max_length: int) -> dict[str, Any]:
    """:func:`split_scores` plus every test document's NLL in nats (``test_doc_nll``), for a
    bootstrap over the test documents (their bytes are in the corpus)."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    for split, name in SPLITS:
        texts, domains = _split_texts(runs, name)
        result = student_bpb(model, tokenizer, texts, max_length)
        out[split] = domain_scores(result, texts, domains)
        if split == "test":
            out["test_doc_nll"] = {d: float(v) for d, v in result.per_doc_nll.items()}
    return {**out, "score_wall_s": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0]}


def score_start(study: Study, runs: Path, seeds: list[int], settings: dict[str, Any]) -> dict[str, Any]:
    """The untouched student, scored once (it is the same for every seed), one step-0 segment
    per seed so that it pairs like any arm."""
    path = runs / "start" / "scores.json"
    if not path.is_file():
        from avokit.recipe.student import StudentConfig
        from avokit.student import build_student, load_student_tokenizer

        tok = load_student_tokenizer(study.student_dir())
        model = build_student(StudentConfig.model_validate({"pretrained": study.student_dir()}), tok)
        _write_json(path, {"step": 0, "train_wall_s": 0.0,
                           **study.scores(model, tok, runs, settings["score_max_length"])})
    scores = json.loads(path.read_text())
    for seed in seeds:
        run_dir = runs / "start" / f"s{seed}"
        if not (run_dir / "segments.json").is_file():
            record_run(study, runs, run_dir, "start", seed, settings, None)
            _write_json(run_dir / "segments.json", [scores])
    return scores


def save_weights(model: Any, folder: Path) -> None:
    """``model``'s config and weights (safetensors) in ``folder``, whole or not at all."""
    import shutil

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)


def scored_training(rec: Recipe, baseline: bool, segments: list[dict[str, Any]], wanted: int,
                    scores: Callable[[Any], dict[str, Any]], label: str,
                    save: Callable[[int, Any], None] | None = None) -> None:
    """Train ``rec`` (resuming), scoring the model at every checkpoint into ``segments`` (written
    to ``rec.run_dir/segments.json`` each time; a step scored before a restart is not redone);
    refuses a run that ends with fewer than ``wanted`` segments. ``save(step, model)`` runs
    after each scoring, outside the segment's train wall time too. Shared by the crossing study."""
    from avokit.train import run_training

    log_path = rec.run_dir / "segments.json"
    clock = [time.perf_counter()]

    def on_checkpoint(step: int, model: Any) -> None:
        wall = time.perf_counter() - clock[0]  # the first segment's includes the run's setup
        if all(s["step"] != step for s in segments):
            scored = {"step": step, "train_wall_s": round(wall, 1), **scores(model)}
            if save is not None:  # before the segment is recorded: a recorded step has its weights
                save(step, model)
            segments.append(scored)
            segments.sort(key=lambda s: s["step"])
            _write_json(log_path, segments)
            print(f"{label} step {step}: validation {scored['validation'][OVERALL]:.4f} ({wall:.0f} s)", flush=True)
        clock[0] = time.perf_counter()

    run_training(rec, baseline=baseline, progress=False, on_checkpoint=on_checkpoint)
    if len(segments) < wanted:
        raise SystemExit(f"{rec.run_dir}: training finished with {len(segments)} of {wanted} segments scored; "
                         f"delete {rec.run_dir} to train it again")


def train_arm(study: Study, runs: Path, arm: str, seed: int, settings: dict[str, Any],
              keep_checkpoints: bool = False) -> None:
    """Train one (arm, seed), scoring the student after every segment; resumable per segment."""
    import shutil

    from avokit.student import load_student_tokenizer

    rec = arm_recipe(study, runs, arm, seed, settings)
    baseline = not study.arms[arm][0]
    ckpt = rec.run_dir / ("baseline" if baseline else "student") / "checkpoints"
    log_path = rec.run_dir / "segments.json"
    segments: list[dict[str, Any]] = json.loads(log_path.read_text()) if log_path.is_file() else []
    wanted = settings["steps"] // settings["segment_steps"]
    if len(segments) < wanted:
        record_run(study, runs, rec.run_dir, arm, seed, settings, rec)
        _drop_unscored_checkpoints(ckpt, segments[-1]["step"] if segments else 0)
        tokenizer = load_student_tokenizer(study.student_dir())
        keep = study.save_model

        def save(step: int, model: Any) -> None:
            if keep is not None and keep(arm, step):
                save_weights(model, rec.run_dir / "models" / f"step{step}")

        scored_training(rec, baseline, segments, wanted, lambda model: study.scores(
            model, tokenizer, runs, settings["score_max_length"]), f"[{study.name}] {arm} seed {seed}", save)
    if not keep_checkpoints:  # the scores are in segments.json; a checkpoint is ~1.6 GB
        shutil.rmtree(ckpt, ignore_errors=True)


def train(study: Study, runs: Path, arms: list[str], seeds: list[int], settings: dict[str, Any],
          keep_checkpoints: bool = False) -> None:
    """Score the start, then train every (seed, arm) not finished, seed-major (paired results
    accumulate seed by seed). ``runs/data/data.json`` must exist (``prepare``)."""
    if not (runs / "data" / "data.json").is_file():
        raise SystemExit(f"{runs}/data/data.json missing: run `{study.data.module} prepare` first")
    score_start(study, runs, seeds, settings)  # every run records the start's scores beside its own
    for seed in seeds:
        for arm in arms:
            if study.arms[arm][1] is not None:
                train_arm(study, runs, arm, seed, settings, keep_checkpoints)
