"""A pretrained-student study as data: its arms, the report's designs and its data source
(:class:`Study`), and what every study's runs share: the settings lock, each process's
provenance, an arm's recipe and the collection of finished runs.

Runs layout under ``RUNS`` (any study): ``data/`` (corpus, caches, ``data.json``),
``settings.json`` (shared by every run), ``<arm>/s<seed>/`` (``segments.json`` with each
segment's scores, ``run.json`` with what each process ran on). Training and scoring:
:mod:`bench.quality.study.runner`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avokit.recipe import Recipe
from bench.provenance import Provenance
from bench.quality.fusion_proof import proof
from bench.quality.study.data import DataSource, _write_json

ROOT = Path(__file__).resolve().parents[3]
# teachers, changes to the recipe's train section (None: scored, not trained), what it is
Arm = tuple[list[str], dict[str, Any] | None, str]
SHARED = ("segment_steps", "batch_size", "seq_len", "lr", "warmup", "score_max_length", "mixed_precision")


@dataclass(frozen=True)
class Study:
    """One study: ``arms`` (name -> :data:`Arm`), ``designs`` (the report's comparisons, read
    only by the study's own report), ``data`` (corpus, captures), the student's folder and how
    a model is scored (``scores(model, tokenizer, runs, max_length)`` -> validation and test
    BPB). ``adjust(runs, arm, train)`` may change an arm's train section with what only the
    runs know (e.g. a routing chosen on validation); it returns the train section to use.
    ``arm_data(runs, arm)``: the folder whose ``corpus`` and ``cache/<teacher>`` an arm links
    (default ``runs/data``) and a ``generate`` section, or None: with one, the arm also links
    that folder's ``generated/`` (teacher-written training documents, avokit's generate stage)
    and trains on them. ``run_info``: added to every run.json (e.g. what the runs start from).
    ``save_model(arm, step)``: whether the weights scored at ``step`` are kept in
    ``<run>/models/step<step>`` (runs whose checkpoints are evaluated after training)."""

    name: str
    arms: Mapping[str, Arm]
    designs: Mapping[str, Any]
    data: DataSource
    student_dir: Callable[[], Path]
    scores: Callable[[Any, Any, Path, int], dict[str, Any]]
    adjust: Callable[[Path, str, dict[str, Any]], dict[str, Any]] | None = field(default=None)
    arm_data: Callable[[Path, str], tuple[Path, dict[str, Any] | None]] | None = field(default=None)
    run_info: Mapping[str, Any] = field(default_factory=dict)
    save_model: Callable[[str, int], bool] | None = field(default=None)

    def data_recipe(self, runs: Path) -> Recipe:
        """The data recipe (corpus and captures) with its run folder at ``runs/data``."""
        return self.data.recipe(runs)


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
    # as --steps: a later train need not repeat it (the first one's default is 10)
    segment = args.segment_steps if args.segment_steps is not None else (saved or {}).get("segment_steps", 10)
    mine = {"steps": steps, "segment_steps": segment, "batch_size": args.batch_size,
            "seq_len": args.seq_len, "lr": args.lr, "warmup": args.warmup,
            "score_max_length": args.score_max_length, "mixed_precision": "no"}
    if steps % segment:
        raise SystemExit(f"--steps {steps} is not a multiple of --segment-steps {segment}")
    if saved is not None:
        diff = {k: (saved.get(k), mine[k]) for k in SHARED if saved.get(k) != mine[k]}
        if diff:
            raise SystemExit(f"{path}: these runs were trained with other settings (saved, given): {diff}")
        if steps < saved["steps"]:
            raise SystemExit(f"{path}: --steps {steps} below the {saved['steps']} recorded; runs only grow")
    _write_json(path, mine)
    return mine


def arm_recipe(study: Study, runs: Path, arm: str, seed: int, settings: dict[str, Any]) -> Recipe:
    """The recipe of one (arm, seed) run, its corpus and caches linked to ``runs/data``."""
    teachers, changes, _ = study.arms[arm]
    train: dict[str, Any] = {
        "seed": seed, "steps": settings["steps"], "batch_size": settings["batch_size"],
        "seq_len": settings["seq_len"], "lr": settings["lr"], "warmup_steps": settings["warmup"],
        "min_lr_ratio": 1.0, "mixed_precision": settings["mixed_precision"],
        "checkpoint_every": settings["segment_steps"], "eval_every": 10**9, "log_every": 10}
    for key, val in (changes or {}).items():
        train[key] = {**train.get(key, {}), **val} if isinstance(val, dict) else val
    if study.adjust is not None:
        train = study.adjust(runs, arm, train)
    data = study.data_recipe(runs)
    folder = str(study.student_dir())
    source, generate = study.arm_data(runs, arm) if study.arm_data is not None else (runs / "data", None)
    rec = Recipe.model_validate({
        "name": f"s{seed}", "runs_dir": str((runs / arm).resolve()), "base_dir": ROOT,
        "corpus": data.corpus.model_dump(mode="json"),
        # the CE baseline trains without teachers; a recipe still names one
        "teachers": [data.teacher(t).model_dump(mode="json") for t in (teachers or study.data.teachers[:1])],
        "student": {"pretrained": folder, "tokenizer": {"kind": "path", "path": folder}}, "train": train,
        **({"generate": generate} if generate is not None else {})})
    _link(source / "corpus", rec.run_dir / "corpus")
    for t in teachers:
        _link(source / "cache" / t, rec.run_dir / "cache" / t)
    if generate is not None:
        _link(source / "generated", rec.run_dir / "generated")
    return rec


def record_run(study: Study, runs: Path, run_dir: Path, arm: str, seed: int, settings: dict[str, Any],
               rec: Recipe | None) -> None:
    """Append this process's provenance to the run's ``run.json`` (written on every start)."""
    path = run_dir / "run.json"
    old = json.loads(path.read_text()) if path.is_file() else {"processes": []}
    data = json.loads((runs / "data" / "data.json").read_text())
    start = runs / "start" / "scores.json"
    _write_json(path, {"arm": arm, "seed": seed, "what": study.arms[arm][2], "teachers": study.arms[arm][0],
                       "student": data["student_dir"], "train": rec.train.model_dump(mode="json") if rec else None,
                       "teachers_test_bpb": data["teachers_test_bpb"],
                       "start_test_bpb": json.loads(start.read_text())["test"] if start.is_file() else None,
                       **study.run_info, "processes": [*old["processes"], provenance(runs, settings)]})


def collect(study: Study, runs: Path, settings: dict[str, Any]) -> tuple[dict[str, dict[int, Any]], list[str]]:
    """Every finished run (arm -> seed -> {segments, run}) and the unfinished ones' names."""
    results: dict[str, dict[int, Any]] = {}
    unfinished: list[str] = []
    wanted = settings["steps"] // settings["segment_steps"]
    for arm, (_, changes, _) in study.arms.items():
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


def run_records(results: Mapping[str, Mapping[int, Any]]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """What the counted runs were trained with: per field (commit, dtype, cpu, corpus manifest
    hash) the distinct values over every process, and per run (``arm/seedN``) its commits."""
    procs = [p for by in results.values() for r in by.values() if r["run"] for p in r["run"]["processes"]]
    records = {k: sorted({str(p.get(k)) for p in procs}) for k in ("commit", "dtype", "cpu", "corpus_manifest_sha256")}
    training = {f"{a}/seed{s}": [str(p.get("commit")) for p in r["run"]["processes"]]
                for a, by in results.items() for s, r in by.items() if r["run"]}
    return records, training
