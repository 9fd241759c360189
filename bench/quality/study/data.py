"""A study's data (bench/quality/study/study.py): a corpus/capture YAML, the files its corpus
reads that ``prepare`` writes first, the teachers' captures, the student's folder and token
counts. The transfer study's instance is ``transfer_data.TRANSFER_DATA``.

``prepare`` writes ``RUNS/data/``: the written source files, ``corpus/`` (split by source
text), ``cache/<teacher>/`` (avokit's normal capture, one child process per teacher,
resumable; or, with ``reuse``, the finished shards of another study's caches for the documents
they hold plus a capture of the rest: :mod:`bench.quality.study.reuse`), ``timings/`` and
``data.json`` (corpus manifest and its sha256, the student's tokens per split and domain, each
teacher's own test BPB from its cache and the dtype it computed in).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from avokit.checksums import file_sha256
from avokit.evaluate.run import cpu_model
from avokit.recipe import Recipe, recipe_from_dict
from bench.quality.fusion_proof.proof import teacher_test_bpb

ROOT = Path(__file__).resolve().parents[3]
STUDENT = "smollm2-135m"
OPTIONS = "options.json"  # runs/data/options.json: what these runs' captures changed from the YAML


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as JSON lines at ``path``, written whole or not at all (a killed prepare leaves
    no half file that a later run would take as done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path


def jsonl_source(recipe: Recipe, file_name: str) -> Any:
    """The recipe's corpus source read from the JSON-lines file ``file_name`` (a study writes
    that file into its data folder before the corpus is built)."""
    found = next((s for s in recipe.corpus.sources if s.kind == "jsonl" and s.path and s.path.name == file_name), None)
    if found is None or found.path is None:
        raise ValueError(f"recipe {recipe.name!r}: no jsonl corpus source reads {file_name}")
    return found


def write_source_once(recipe: Recipe, file_name: str, rows: Callable[[int], Iterable[dict[str, Any]]]) -> Path:
    """Write the recipe's source file ``file_name`` once (a no-op when it exists): the first
    ``max_docs`` rows that ``rows(max_chars)`` yields, ``max_chars`` being the source's limit
    (else the corpus's). Whole or not at all (:func:`write_jsonl`)."""
    src = jsonl_source(recipe, file_name)
    assert src.max_docs is not None  # the studies' YAML gives every written source a size
    if src.path.is_file():
        return Path(src.path)
    return write_jsonl(src.path, list(itertools.islice(rows(src.max_chars or recipe.corpus.max_chars), src.max_docs)))


@dataclass(frozen=True)
class DataSource:
    """Where a study's data comes from. ``yaml``: its corpus and capture sections (jsonl
    sources with a relative path are read from ``RUNS/data``); ``module``: the study's CLI,
    whose ``capture --teacher T --runs RUNS`` captures one teacher in a child process;
    ``teachers``: the teachers captured; ``writers``: functions writing the source files the
    corpus reads (each ``(recipe) -> path``, a no-op when the file exists)."""

    yaml: Path
    module: str
    teachers: tuple[str, ...]
    writers: tuple[Callable[[Recipe], Path], ...] = ()

    def recipe(self, runs: Path) -> Recipe:
        """The YAML with its run folder at ``runs/data`` (and ``capture.inside_top_k`` from
        ``runs/data/options.json``, where prepare set it)."""
        raw = yaml.safe_load(self.yaml.read_text(encoding="utf-8"))
        raw.update(name="data", runs_dir=str(runs.resolve()))
        options = runs / "data" / OPTIONS
        if options.is_file():
            raw["capture"]["inside_top_k"] = json.loads(options.read_text())["inside_top_k"]
        for src in raw["corpus"]["sources"]:
            if src["kind"] != "builtin" and not Path(src["path"]).is_absolute():
                src["path"] = str((runs / "data" / src["path"]).resolve())
        return recipe_from_dict(raw, self.yaml.parent, str(self.yaml), check_paths=False)


def set_inside_top_k(runs: Path, inside_top_k: int) -> None:
    """Record ``capture.inside_top_k`` for every capture of these runs (once: a folder whose
    caches were captured one way is never extended another way)."""
    path = runs / "data" / OPTIONS
    old = json.loads(path.read_text()) if path.is_file() else None
    if old is not None and old.get("inside_top_k", 0) != inside_top_k:
        raise SystemExit(f"{path}: these runs capture with inside_top_k={old.get('inside_top_k', 0)}, "
                         f"not {inside_top_k}; use another --runs folder")
    if old is None:
        _write_json(path, {"inside_top_k": inside_top_k})


@functools.cache
def student_dir() -> Path:
    """The registry's float32 Hugging Face copy of SmolLM2-135M (weights and tokenizer)."""
    from avokit.teachers.materialize import float32_dir
    from avokit.teachers.registry import locate_teacher, registry_tokenizer

    folder, _ = float32_dir(STUDENT, locate_teacher(STUDENT), lambda: registry_tokenizer(STUDENT))
    return folder


def capture(source: DataSource, runs: Path, teacher: str) -> None:
    """Capture one teacher over train and held-out (resumable: finished shards are kept)."""
    from avokit.capture import run_capture

    t0 = time.perf_counter()
    run_capture(source.recipe(runs), teacher=teacher)
    path = runs / "data" / "timings" / f"{teacher}.json"
    old = json.loads(path.read_text()) if path.is_file() else []  # one entry per process (resumed ones too)
    _write_json(path, [*old, {"wall_s": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0],
                              "cpu": cpu_model(), "threads": os.environ.get("OMP_NUM_THREADS")}])


def _capture_child(source: DataSource, runs: Path, teacher: str, reuse: Path | None) -> None:
    """``python -m <module> capture --teacher T --runs RUNS [--reuse DIR]`` (a fresh process:
    the teacher's memory is freed when it ends)."""
    cmd = [sys.executable, "-m", source.module, "capture", "--teacher", teacher, "--runs", str(runs)]
    subprocess.run(cmd + (["--reuse", str(reuse)] if reuse is not None else []), check=True, cwd=ROOT)


def prepare(source: DataSource, runs: Path, teachers: list[str], reuse: Path | None = None) -> dict[str, Any]:
    """The written sources, the corpus, the captures of ``teachers`` that are not finished (a
    child process each), then, once every teacher is captured, the student's token counts and
    the teachers' own test BPB into ``runs/data/data.json``. Resumable: rerun after a kill.
    ``reuse``: another study's data folder whose caches hold some of these documents."""
    from avokit.cache.manifest import MANIFEST_NAME
    from avokit.corpus import build_corpus, load_split
    from avokit.student import load_student_tokenizer

    recipe = source.recipe(runs)
    for write in source.writers:
        write(recipe)
    manifest = build_corpus(recipe)
    for t in teachers:
        if not (recipe.run_dir / "cache" / t / MANIFEST_NAME).is_file():
            _capture_child(source, runs, t, reuse)
    missing = [t for t in source.teachers if not (recipe.run_dir / "cache" / t / MANIFEST_NAME).is_file()]
    if missing:  # e.g. one `prepare --teachers X` per teacher, side by side: the last one writes data.json
        return {"captured": teachers, "not_yet_captured": missing, "data.json": "written once every teacher is captured"}
    tok = load_student_tokenizer(student_dir())
    splits = {s: load_split(recipe, s) for s in ("train", "validation", "heldout")}
    tokens = {s: {d: sum(len(tok(x.text)["input_ids"]) for x in docs if x.domain == d)
                  for d in sorted({x.domain for x in docs})} for s, docs in splits.items()}
    caches = {t: json.loads((recipe.run_dir / "cache" / t / MANIFEST_NAME).read_text()) for t in source.teachers}
    info = {"corpus": manifest.model_dump(mode="json"),
            "corpus_manifest_sha256": file_sha256(recipe.run_dir / "corpus" / "manifest.json"),
            "student": STUDENT, "student_dir": str(student_dir()),
            "student_tokens": {s: {**v, "total": sum(v.values())} for s, v in tokens.items()},
            "teachers_test_bpb": teacher_test_bpb(runs, list(source.teachers)),
            "teacher_caches": {t: {k: c.get(k) for k in ("compute_dtype", "logprob_bits", "top_k", "inside_top_k",
                                                         "n_docs", "n_tokens")}
                               for t, c in caches.items()},
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    _write_json(runs / "data" / "data.json", info)
    return info
