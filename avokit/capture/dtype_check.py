"""Capture's bf16 check: under ``dtype: auto`` a teacher is used in bf16 only if, on a few
training documents, its bf16 records are faithful to its float32 ones.

The verdict is kept next to the cache (``bf16_check.json``) so a resumed capture and the
evaluation of the same run use the same dtype without checking again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from avokit.cache.manifest import write_json_atomic
from avokit.corpus import load_split
from avokit.precision import resolve_dtype
from avokit.recipe import Recipe, TeacherConfig
from avokit.teachers.base import Teacher
from avokit.teachers.fidelity import check_path, checked_config, compare_records, read_check

TeacherLoader = Callable[[TeacherConfig, Path], Teacher]


def needs_check(recipe: Recipe, config: TeacherConfig) -> bool:
    """True where ``auto`` resolves to bf16 on this machine and checking is on."""
    return (config.dtype == "auto" and recipe.capture.bf16_check_docs > 0 and config.kind != "openai"
            and resolve_dtype("auto", config.device) == "bfloat16")


def load_checked(recipe: Recipe, config: TeacherConfig, loader: TeacherLoader,
                 console: Console | None = None) -> Teacher:
    """Load the teacher for capture in the dtype it may use (see the module docstring).

    Without a stored verdict: load in float32, score the first ``capture.bf16_check_docs``
    training documents, cast to bf16 in place, score them again and compare
    (:func:`avokit.teachers.fidelity.compare_records`); a teacher that misses a limit is
    loaded again in float32 (casting back would keep bf16's rounding).
    """
    path = check_path(recipe, config.name)
    if not needs_check(recipe, config) or read_check(path) is not None:
        return loader(checked_config(recipe, config), recipe.base_dir)
    float32 = config.model_copy(update={"dtype": "float32"})
    teacher = loader(float32, recipe.base_dir)
    to_dtype = getattr(teacher, "to_dtype", None)
    if to_dtype is None:  # a backend that cannot change precision: keep what it loaded
        return teacher
    docs = load_split(recipe, "train", generated=False)[: recipe.capture.bf16_check_docs]
    texts, ids = [d.text for d in docs], [d.doc_id for d in docs]
    ref = teacher.score(texts, ids, recipe.capture.top_k)
    to_dtype("bfloat16")
    test = teacher.score(texts, ids, recipe.capture.top_k)
    fidelity = compare_records(ref, test, [len(t.encode("utf-8")) for t in texts])
    failures = fidelity.failures()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"passed": not failures, "failures": failures, "doc_ids": ids,
                             **fidelity.model_dump()})
    if not failures:
        return teacher
    if console is not None:
        console.print(f"[yellow]{config.name}: bf16 misses the fidelity limits on {len(docs)} "
                      f"documents ({'; '.join(failures)}); capturing in float32[/yellow]")
    teacher.close()
    return loader(float32, recipe.base_dir)
