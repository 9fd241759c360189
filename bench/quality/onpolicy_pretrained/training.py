"""Training the on-policy study's runs with the study framework's trainer
(:func:`bench.quality.study.runner.train_arm`: segments, validation and test BPB after each,
resumable per segment, ``train_wall_s`` per segment).

Per seed, in this order: the shared start (``--start offline:N``: the ``warm`` run, N steps of
offline KD from the pretrained model, whose final weights every arm of the seed starts from),
its step-0 scores as the ``start`` arm, then ``on`` (and pilot variants), ``seq``, ``offline``.
``offline`` trains ``--offline-steps`` and keeps each scored checkpoint's weights
(``offline/s<seed>/models/step<N>``): the one at ``on``'s wall time is chosen after training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.quality.onpolicy_pretrained.arms import (
    SEQDATA,
    TRAINED,
    WARM,
    Options,
    arm_steps,
    make_study,
)
from bench.quality.study.data import _write_json
from bench.quality.study.runner import score_start, train_arm
from bench.quality.study.study import record_run


def start_segments(runs: Path, opts: Options, settings: dict[str, Any], seed: int, keep_checkpoints: bool) -> None:
    """The seed's start, scored as a step-0 segment of the ``start`` arm (``start/s<seed>``):
    the pretrained model (scored once for every seed), or the warm run's final segment after
    it is trained."""
    if opts.start == "pretrained":
        score_start(make_study(runs, opts, None), runs, [seed], settings)
        return
    train_arm(make_study(runs, opts, None), runs, WARM, seed, arm_steps(opts, settings, WARM), keep_checkpoints)
    run_dir = runs / "start" / f"s{seed}"
    if not (run_dir / "segments.json").is_file():
        warm = json.loads((runs / WARM / f"s{seed}" / "segments.json").read_text())[-1]
        record_run(make_study(runs, opts, seed), runs, run_dir, "start", seed, settings, None)
        _write_json(run_dir / "segments.json", [{**warm, "step": 0, "train_wall_s": 0.0,
                                                 "warm_train_wall_s": warm["train_wall_s"]}])


def train(runs: Path, opts: Options, settings: dict[str, Any], arms: list[str], seeds: list[int],
          keep_checkpoints: bool = False) -> None:
    """Every (seed, arm) not finished, seed-major, ``on`` before ``offline`` (TRAINED order);
    ``runs/data`` (``prepare``) and, for ``seq``, the teacher-written text must exist."""
    if not (runs / "data" / "data.json").is_file():
        raise SystemExit(f"{runs}/data/data.json missing: run `prepare` first (it links the fusion study's data)")
    if "seq" in arms and not (runs / SEQDATA / "generate.json").is_file():
        raise SystemExit(f"{runs}/{SEQDATA}/generate.json missing: run `prepare` before training seq")
    caches = json.loads((runs / "data" / "data.json").read_text()).get("teacher_caches") or {}
    other = {t: c["top_k"] for t, c in caches.items() if c.get("top_k") not in (None, opts.top_k)}
    if other:  # live targets of another width than the cached ones would differ in kind, not only in text
        raise SystemExit(f"--top-k {opts.top_k}: the teachers' caches have top-k {other}; score live as they were")
    unknown = [a for a in arms if a != "start" and a not in TRAINED]
    if unknown or WARM in arms:
        raise SystemExit(f"train: cannot train {unknown or [WARM]} directly (arms: start, {', '.join(TRAINED[1:])})")
    for seed in seeds:
        start_segments(runs, opts, settings, seed, keep_checkpoints)
        study = make_study(runs, opts, seed)
        for arm in sorted((a for a in arms if a != "start"), key=TRAINED.index):
            train_arm(study, runs, arm, seed, arm_steps(opts, settings, arm), keep_checkpoints)


def finished(runs: Path, opts: Options, settings: dict[str, Any], arm: str, seed: int) -> list[dict[str, Any]] | None:
    """The segments of a finished run (``start``: its step-0 segment), else None."""
    path = runs / arm / f"s{seed}" / "segments.json"
    if not path.is_file():
        return None
    segments: list[dict[str, Any]] = json.loads(path.read_text())
    if arm == "start":
        return segments
    mine = arm_steps(opts, settings, arm)
    segments = [s for s in segments if s["step"] <= mine["steps"]]
    return segments if len(segments) >= mine["steps"] // mine["segment_steps"] else None
