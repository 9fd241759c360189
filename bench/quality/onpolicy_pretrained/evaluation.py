"""``evaluate``: the checkpoints the report compares, each judged once by both teachers.

Per seed, the points compared are: ``start`` (step 0), every finished trained arm at ``--steps``
(equal steps: ``offline`` too) and, for each on-policy arm, ``offline@<arm>_time``: the offline
checkpoint at that arm's train wall time (:func:`stats.equal_time`). Each point's model (the
start's weights, ``models/step<N>`` kept by offline's training, or a run's final ``student/``)
continues the same held-out prompts with the same sampling seed and both teachers judge what it
wrote (:func:`bench.quality.onpolicy.onpolicy_eval.evaluate_model`); the result is
``<arm>/s<seed>/eval-<split>/step<N>.json`` (the pretrained start, the same for every seed:
``start/eval-<split>.json``; with ``--eval-samples K`` > 1 the split is named ``<split>-kK``). Design ``test`` uses ``--eval-prompts`` test (held-out) documents
per domain; design ``pilot`` validation documents, so that choices made on the pilot never see
the test split. Resumable: an evaluated point is skipped. Offline weights no point needs are
deleted afterwards (``--keep-models`` keeps them); a point's weights are kept.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.quality.onpolicy_pretrained import arms
from bench.quality.onpolicy_pretrained.arms import ON_ARMS, Options, start_dir
from bench.quality.onpolicy_pretrained.stats import equal_time, train_seconds
from bench.quality.onpolicy_pretrained.training import finished
from bench.quality.study.data import _write_json

SPLIT = {"test": "test", "pilot": "validation"}  # design -> the split its prompts come from
CORPUS_SPLIT = {"test": "heldout", "validation": "validation"}
SAMPLES_PER_DOMAIN = 2


def eval_file(runs: Path, opts: Options, arm: str, seed: int, step: int, design: str) -> Path:
    """Where the evaluation of ``arm`` of ``seed`` at ``step`` is written."""
    # the evaluations of other --eval-samples lie apart: a resumed evaluate never mixes them
    split = SPLIT[design] + (f"-k{opts.eval_samples}" if opts.eval_samples > 1 else "")
    if arm == "start" and opts.start == "pretrained":
        return runs / "start" / f"eval-{split}.json"
    return runs / arm / f"s{seed}" / f"eval-{split}" / f"step{step}.json"


def model_folder(runs: Path, opts: Options, arm: str, seed: int, step: int) -> Path:
    """The weights of ``arm`` of ``seed`` after ``step`` steps."""
    if arm == "start":
        return start_dir(runs, opts, seed)
    run = runs / arm / f"s{seed}"
    saved = run / "models" / f"step{step}"
    if (saved / "config.json").is_file():
        return saved
    done = run / "student" / "training_done.json"
    if done.is_file() and json.loads(done.read_text())["steps"] == step:
        return run / "student"
    raise SystemExit(f"{run}: no weights of step {step} (neither models/step{step} nor a student/ finished there)")


def points(runs: Path, opts: Options, settings: dict[str, Any], seed: int) -> dict[str, tuple[str, int]]:
    """Point name -> (arm, step) compared for ``seed``, over its finished runs."""
    done = {arm: finished(runs, opts, settings, arm, seed) for arm in ("start", *ON_ARMS, "seq", "offline")}
    out: dict[str, tuple[str, int]] = {}
    if done["start"]:
        out["start"] = ("start", 0)
    for arm in (*ON_ARMS, "seq", "offline"):
        if done[arm]:
            out[arm] = (arm, settings["steps"])
    offline = done["offline"]
    for arm in ON_ARMS:
        segs = done[arm]
        if offline and segs:
            step = equal_time(offline, train_seconds(segs))["step"]
            out[f"offline@{arm}_time"] = ("offline", step) if step else ("start", 0)
    return out


def _prompts(runs: Path, opts: Options, tok: Any, design: str) -> list[Any]:
    from avokit.corpus import read_documents
    from bench.quality.onpolicy.onpolicy import stratified
    from bench.quality.onpolicy.onpolicy_eval import eval_prompts

    docs = read_documents(runs / "data" / "corpus" / f"{CORPUS_SPLIT[SPLIT[design]]}.parquet")
    prompts = eval_prompts(stratified(docs, opts.eval_prompts, 23), tok, opts.eval_prompt_tokens)
    if opts.eval_samples == 1:
        return prompts
    # each prompt K times, one draw each (the sampling generator runs on through them); the
    # doc_id names the draw, and the part before '#' the document a bootstrap resamples
    return [dataclasses.replace(p, doc_id=f"{p.doc_id}#{k}") for k in range(opts.eval_samples) for p in prompts]


def _todo(runs: Path, opts: Options, settings: dict[str, Any], seeds: list[int],
          design: str) -> dict[Path, tuple[str, int, int]]:
    todo: dict[Path, tuple[str, int, int]] = {}
    for seed in seeds:
        for arm, step in points(runs, opts, settings, seed).values():
            path = eval_file(runs, opts, arm, seed, step, design)
            if not path.is_file():
                todo.setdefault(path, (arm, seed, step))
    return todo


def evaluate(runs: Path, opts: Options, settings: dict[str, Any], seeds: list[int], design: str,
             keep_models: bool = False) -> int:
    """Evaluate every point of ``seeds`` not yet evaluated (both teachers loaded once);
    returns how many were evaluated."""
    todo = _todo(runs, opts, settings, seeds, design)
    if todo:
        _evaluate_all(runs, opts, design, todo)
    if not keep_models:
        for seed in seeds:
            prune(runs, opts, settings, seed)
    return len(todo)


def _evaluate_all(runs: Path, opts: Options, design: str, todo: dict[Path, tuple[str, int, int]]) -> None:
    from transformers import AutoModelForCausalLM

    from avokit.student import load_student_tokenizer
    from bench.quality.onpolicy.onpolicy_eval import evaluate_model
    from bench.quality.onpolicy_pretrained.seqdata import load_checked

    tok = load_student_tokenizer(arms.student_dir())  # every start shares SmolLM2's tokenizer
    prompts = _prompts(runs, opts, tok, design)
    rec = arms.DATA.recipe(runs)
    teachers = {t: load_checked(rec, t) for t in arms.DATA.teachers}
    try:
        for path, (arm, seed, step) in todo.items():
            folder = model_folder(runs, opts, arm, seed, step)
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32").eval()
            t0 = time.perf_counter()
            result = evaluate_model(model, tok, prompts, teachers, opts.eval_new_tokens, opts.sample_seed,
                                    samples_per_domain=SAMPLES_PER_DOMAIN)
            _write_json(path, {"arm": arm, "seed": seed, "step": step, "design": design, "split": SPLIT[design],
                               "model": str(folder), "prompts": len(prompts) // opts.eval_samples,
                               "samples_per_prompt": opts.eval_samples,
                               "eval_wall_s": round(time.perf_counter() - t0, 1), **result})
            print(f"[onpolicy_pretrained] evaluated {arm} seed {seed} step {step}: teacher-judged "
                  f"{result['teacher_nll']:.4f} bits/byte, distinct-2 {result['distinct2']:.3f}", flush=True)
    finally:
        for t in teachers.values():
            t.close()


def prune(runs: Path, opts: Options, settings: dict[str, Any], seed: int) -> list[Path]:
    """Delete offline's kept weights that no point of ``seed`` needs, once ``on`` and every
    other on-policy arm of the seed that started have finished (before, an equal-time
    checkpoint is unknown; an arm trained later needs ``--keep-models``)."""
    started = [a for a in ON_ARMS if (runs / a / f"s{seed}" / "segments.json").is_file()]
    if any(finished(runs, opts, settings, a, seed) is None for a in {"on", *started}):
        return []
    if finished(runs, opts, settings, "offline", seed) is None:
        return []
    keep = {step for arm, step in points(runs, opts, settings, seed).values() if arm == "offline"}
    gone = []
    for folder in sorted((runs / "offline" / f"s{seed}" / "models").glob("step*")):
        if folder.name[4:].isdigit() and int(folder.name[4:]) not in keep:
            shutil.rmtree(folder)
            gone.append(folder)
    return gone
