"""Scoring every model of a run: held-out BPB and tasks for the student, the CE baseline, the
untouched pretrained start (when the student has one) and each teacher, one model in memory at a
time, with the generation-quality pass riding along (:mod:`avokit.evaluate.generations`)."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import Any

import numpy as np

from avokit.errors import AvokitError
from avokit.evaluate.bpb import BpbResult, bpb_from_records, score_bpb
from avokit.evaluate.contamination import ContaminationReport
from avokit.evaluate.generations import GenerationJudge
from avokit.evaluate.tasks import Task, TaskResult, run_task
from avokit.recipe import Recipe, TeacherConfig
from avokit.teachers.base import Teacher

MODEL_DIRS = ("student", "baseline")
START = "start"  # the pretrained student before training, scored like the trained ones


def _task_metrics(res: TaskResult, dirty: set[str]) -> dict[str, Any]:
    clean = set(res.correct) - dirty
    out: dict[str, Any] = {k: v.as_dict() for k, v in res.scores().items()}
    out["clean"] = {k: v.as_dict() for k, v in res.scores(clean).items()}
    out["dirty"] = {k: v.as_dict() for k, v in res.scores(set(res.correct) & dirty).items()}
    return out


def cached_bpb(recipe: Recipe, teacher: Teacher, texts: dict[str, str]) -> BpbResult | None:
    """The teacher's held-out BPB from its capture cache, or None where the cache is absent
    or misses a held-out document. The cache must come from this very teacher (fingerprint)."""
    from avokit.cache import CacheReader

    path = recipe.run_dir / "cache" / teacher.info.name
    if not (path / "manifest.json").is_file():
        return None
    reader = CacheReader(path, expect_teacher_fingerprint=teacher.info.fingerprint)
    ids = [d for d, t in texts.items() if t]
    if any(d not in reader for d in ids):
        return None
    records = [reader[d] for d in ids]
    # same doc_id is not same text: a cache from an older corpus would score other bytes, so
    # the teacher's tokenization of today's held-out text must be exactly the cached one
    for rec, tok in zip(records, teacher.tokenize([texts[d] for d in ids])):
        if not (np.array_equal(rec.token_ids, tok.ids) and np.array_equal(rec.byte_ends, tok.byte_ends)):
            raise AvokitError(f"{path}: cached tokens of held-out document {rec.doc_id!r} do not match its "
                              "current text (cache from another corpus?); run `avokit capture` again or set "
                              "eval.teacher_bpb: live")
    return bpb_from_records(teacher.info.name, records, texts, source="cache")


def _evaluate_model(
    teacher: Teacher, name: str, texts: dict[str, str], tasks: list[Task], recipe: Recipe,
    contamination: ContaminationReport, use_cache: bool = False,
) -> tuple[BpbResult, dict[str, Any]]:
    bpb = cached_bpb(recipe, teacher, texts) if use_cache and recipe.eval.teacher_bpb != "live" else None
    if bpb is None and use_cache and recipe.eval.teacher_bpb == "cache":
        raise AvokitError(f"eval.teacher_bpb: cache: {recipe.run_dir / 'cache' / name} does not cover every "
                          "held-out document; run `avokit capture` or set teacher_bpb: auto")
    if bpb is None:
        bpb = score_bpb(teacher, texts, batch_size=recipe.eval.batch_size, name=name)
    model, tok = getattr(teacher, "model", None), getattr(teacher, "tokenizer", None)
    task_out: dict[str, Any] = {}
    if tasks and (model is None or tok is None):
        raise AvokitError(f"{name}: task scoring needs a local model (`hf`, `gguf` or `registry` teacher)")
    for task in tasks:
        res = run_task(model, tok, task, recipe.eval.max_length, recipe.eval.batch_size)
        task_out[task.name] = _task_metrics(res, contamination.dirty_ids(task.name))
    return bpb, task_out


def _teacher_loader() -> Any:
    """``load_teacher(config, base_dir)`` from the teachers package (contract: exported from
    ``avokit.teachers``; it lives in ``avokit.teachers.load``)."""
    try:
        from avokit.teachers import load_teacher
    except ImportError:
        from avokit.teachers.load import load_teacher
    return load_teacher


def _load_checked_teacher(recipe: Recipe, teacher: TeacherConfig) -> Teacher:
    """``teacher`` in the dtype its cache was captured in (float32 where its bf16 check failed)."""
    from avokit.teachers.fidelity import checked_config

    loaded: Teacher = _teacher_loader()(checked_config(recipe, teacher), recipe.base_dir)
    return loaded


def _model_info(teacher: Teacher) -> dict[str, Any]:
    return {"license": teacher.info.license, "params": teacher.info.params,
            "backend": teacher.info.backend, "tokenizer": teacher.info.tokenizer_kind,
            "vocab_size": teacher.info.vocab_size,
            # tokens of context per scoring window (live scoring; the capture used the
            # teacher's own max_length too): part of what the BPB means
            "window": getattr(teacher, "max_length", None), "fingerprint": teacher.info.fingerprint,
            "dtype": teacher.info.dtype}


def _student_loaders(recipe: Recipe) -> list[tuple[str, Callable[[], Teacher]]]:
    """Student, baseline and, for a pretrained student, its untouched start: loaded like the
    trained ones, with the run's tokenizer (the one both trained models use)."""
    from avokit.student import load_student_tokenizer
    from avokit.teachers.hf import HFTeacher
    from avokit.teachers.pretrained import resolve_pretrained

    run_dir, window = recipe.run_dir, recipe.eval.max_length
    loaders: list[tuple[str, Callable[[], Teacher]]] = []
    start = resolve_pretrained(recipe)
    if start is not None:
        tok_dir = run_dir / "tokenizer" if (run_dir / "tokenizer" / "tokenizer.json").is_file() else start.folder
        loaders.append((START, functools.partial(
            HFTeacher.from_dir, start.folder, name=START, device="auto", max_length=window,
            fingerprint=start.fingerprint, tokenizer=load_student_tokenizer(tok_dir))))
    # in the order a reader follows: where it started, CE alone, CE with the teachers
    return loaders + [
        (m, lambda m=m: HFTeacher.from_dir(run_dir / m, name=m, device="auto", max_length=window))
        for m in reversed(MODEL_DIRS)
    ]


def score_all(
    recipe: Recipe, texts: dict[str, str], tasks: list[Task], contamination: ContaminationReport,
    judge: GenerationJudge | None = None,
) -> tuple[dict[str, BpbResult], dict[str, Any], dict[str, dict[str, Any]]]:
    """BPB and task scores of student, baseline, start (a pretrained student) and (if asked)
    every teacher, one model in memory at a time: teachers are GBs on a shared CPU box. With
    a ``judge``, the student-like models write their continuations and the teachers judge
    them while each is loaded (so no model is loaded twice)."""
    loaders = _student_loaders(recipe)
    writers = {name for name, _ in loaders}
    if recipe.eval.include_teachers:
        loaders += [(t.name, functools.partial(_load_checked_teacher, recipe, t)) for t in recipe.teachers]
    bpb: dict[str, BpbResult] = {}
    task_metrics: dict[str, Any] = {}
    infos: dict[str, dict[str, Any]] = {}
    for name, load in loaders:
        teacher = load()
        infos[name] = _model_info(teacher)
        try:
            scored = tasks if name in writers or recipe.eval.teacher_tasks else []
            bpb[name], task_metrics[name] = _evaluate_model(teacher, name, texts, scored, recipe, contamination,
                                                            use_cache=name not in writers)
            if judge is not None:
                (judge.write if name in writers else judge.judge)(name, teacher)
        finally:
            teacher.close()
            del teacher
            gc.collect()
    return bpb, task_metrics, infos
