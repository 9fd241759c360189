"""The transfer benchmark's data (bench/quality/transfer/transfer.py): the corpus of transfer.yaml, the
Python file heads it names, the teachers' captures, the student's folder and token counts.

``prepare`` writes ``RUNS/data/``: ``corpus/`` (split by source text), ``cache/<teacher>/``
(avokit's normal capture, one process per teacher, resumable), ``python-files.jsonl``,
``timings/`` and ``data.json`` (corpus manifest and its sha256, the student's tokens per split
and domain, each teacher's own test BPB from its cache and the dtype it computed in).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from avokit.checksums import file_sha256
from avokit.evaluate.run import cpu_model
from avokit.recipe import Recipe, recipe_from_dict
from bench.quality.fusion_proof.proof import teacher_test_bpb

SOURCE = Path(__file__).with_name("transfer.yaml")
STUDENT = "smollm2-135m"
GEMMA, QWEN = TEACHERS = ["gemma3-270m", "qwen2.5-coder-0.5b"]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


OPTIONS = "options.json"  # runs/data/options.json: what these runs' captures changed from transfer.yaml


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


def data_recipe(runs: Path) -> Recipe:
    """transfer.yaml with its run folder at ``runs/data`` and the Python file heads there
    (and ``capture.inside_top_k`` from ``runs/data/options.json``, where prepare set it)."""
    raw = yaml.safe_load(SOURCE.read_text(encoding="utf-8"))
    raw.update(name="data", runs_dir=str(runs.resolve()))
    options = runs / "data" / OPTIONS
    if options.is_file():
        raw["capture"]["inside_top_k"] = json.loads(options.read_text())["inside_top_k"]
    for src in raw["corpus"]["sources"]:
        if src["kind"] != "builtin" and not Path(src["path"]).is_absolute():
            src["path"] = str((runs / "data" / src["path"]).resolve())
    return recipe_from_dict(raw, SOURCE.parent, str(SOURCE), check_paths=False)


def write_python_heads(recipe: Recipe) -> Path:
    """python-files.jsonl: the first segment of each of the first ``max_docs`` python-source
    files that have one (one source text per file; see transfer.yaml). Written once."""
    from avokit.corpus.segment import segment_lines
    from avokit.corpus.sources import read_source
    from avokit.recipe.corpus import CorpusSource

    src = next(s for s in recipe.corpus.sources if s.kind == "jsonl")
    assert src.path is not None and src.max_docs is not None
    if src.path.is_file():
        return src.path
    max_chars = src.max_chars or recipe.corpus.max_chars
    rows = []
    for raw in read_source(CorpusSource(kind="builtin", name="python-source"), recipe.base_dir):
        pieces = segment_lines(raw.text, min(recipe.corpus.min_chars, max_chars), max_chars)
        if pieces:
            rows.append({"text": pieces[0], "origin": raw.origin, "license": raw.license})
        if len(rows) == src.max_docs:
            break
    src.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = src.path.with_name(src.path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(src.path)
    return src.path


@functools.cache
def student_dir() -> Path:
    """The registry's float32 Hugging Face copy of SmolLM2-135M (weights and tokenizer)."""
    from avokit.teachers.materialize import float32_dir
    from avokit.teachers.registry import locate_teacher, registry_tokenizer

    folder, _ = float32_dir(STUDENT, locate_teacher(STUDENT), lambda: registry_tokenizer(STUDENT))
    return folder


def capture(runs: Path, teacher: str) -> None:
    """Capture one teacher over train and held-out (resumable: finished shards are kept)."""
    from avokit.capture import run_capture

    t0 = time.perf_counter()
    run_capture(data_recipe(runs), teacher=teacher)
    path = runs / "data" / "timings" / f"{teacher}.json"
    old = json.loads(path.read_text()) if path.is_file() else []  # one entry per process (resumed ones too)
    _write_json(path, [*old, {"wall_s": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0],
                              "cpu": cpu_model(), "threads": os.environ.get("OMP_NUM_THREADS")}])


def prepare(runs: Path, teachers: list[str]) -> dict[str, Any]:
    """Corpus, the captures of ``teachers`` (a child process each), then, once every teacher is
    captured, the student's token counts and the teachers' own test BPB into
    ``runs/data/data.json``. Resumable: rerun after a kill."""
    from avokit.cache.manifest import MANIFEST_NAME
    from avokit.corpus import build_corpus, load_split
    from avokit.student import load_student_tokenizer

    recipe = data_recipe(runs)
    write_python_heads(recipe)
    manifest = build_corpus(recipe)
    for t in teachers:
        if not (recipe.run_dir / "cache" / t / MANIFEST_NAME).is_file():
            subprocess.run([sys.executable, "-m", "bench.quality.transfer.transfer", "capture", "--teacher", t,
                            "--runs", str(runs)], check=True, cwd=Path(__file__).resolve().parents[3])
    missing = [t for t in TEACHERS if not (recipe.run_dir / "cache" / t / MANIFEST_NAME).is_file()]
    if missing:  # e.g. one `prepare --teachers X` per teacher, side by side: the last one writes data.json
        return {"captured": teachers, "not_yet_captured": missing, "data.json": "written once every teacher is captured"}
    tok = load_student_tokenizer(student_dir())
    splits = {s: load_split(recipe, s) for s in ("train", "validation", "heldout")}
    tokens = {s: {d: sum(len(tok(x.text)["input_ids"]) for x in docs if x.domain == d)
                  for d in sorted({x.domain for x in docs})} for s, docs in splits.items()}
    caches = {t: json.loads((recipe.run_dir / "cache" / t / MANIFEST_NAME).read_text()) for t in TEACHERS}
    info = {"corpus": manifest.model_dump(mode="json"),
            "corpus_manifest_sha256": file_sha256(recipe.run_dir / "corpus" / "manifest.json"),
            "student": STUDENT, "student_dir": str(student_dir()),
            "student_tokens": {s: {**v, "total": sum(v.values())} for s, v in tokens.items()},
            "teachers_test_bpb": teacher_test_bpb(runs, TEACHERS),
            "teacher_caches": {t: {k: c.get(k) for k in ("compute_dtype", "logprob_bits", "top_k", "inside_top_k",
                                                         "n_docs", "n_tokens")}
                               for t, c in caches.items()},
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    _write_json(runs / "data" / "data.json", info)
    return info
