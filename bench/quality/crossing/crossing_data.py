"""The crossing-price study's data (bench/quality/crossing/crossing.py): the transfer study's corpus,
rebuilt in this study's own run folder, and SmolLM2-135M's capture over it.

``prepare`` writes ``RUNS/data/``: ``python-files.jsonl`` and ``corpus/`` exactly as
``transfer.py prepare`` builds them (transfer.yaml: same sources, same split by source text;
``data.json`` records whether each split file's sha256 equals the transfer study's), and
``cache/smollm2-135m/`` (avokit's normal capture, top-k 32, resumable), then ``data.json``
(corpus manifest and its sha256, the teacher's own test BPB, its tokens per split and domain).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from avokit.checksums import file_sha256
from avokit.evaluate.run import cpu_model
from avokit.recipe import Recipe
from avokit.recipe.teachers import TeacherConfig
from bench.quality.fusion_proof.proof import teacher_test_bpb
from bench.quality.transfer.transfer_data import _write_json, data_recipe, write_python_heads

TEACHER = "smollm2-135m"
# the transfer study's data folder: its split files are compared with ours, never written
TRANSFER_DATA = Path(__file__).resolve().parents[3] / "runs" / "bench-transfer" / "data"


def crossing_recipe(runs: Path) -> Recipe:
    """transfer.yaml's corpus and capture sections with SmolLM2-135M as the one teacher,
    its run folder at ``runs/data``."""
    rec = data_recipe(runs)
    teacher = TeacherConfig.model_validate({"name": TEACHER, "kind": "registry", "max_length": 512})
    return rec.model_copy(update={"teachers": [teacher]})


def teacher_dir() -> Path:
    """The registry's float32 Hugging Face copy of SmolLM2-135M (its tokenizer is the shared
    student's); transfer_data's ``student_dir`` is that same folder."""
    from bench.quality.transfer.transfer_data import student_dir

    return student_dir()


def same_split_as(corpus: Path, other: Path) -> dict[str, Any]:
    """Whether each split file of ``corpus`` has the sha256 of ``other``'s (None: ``other`` has
    no corpus to compare with)."""
    mine = json.loads((corpus / "manifest.json").read_text())["files"]
    path = other / "manifest.json"
    if not path.is_file():
        return {"compared_with": str(other), "identical": None, "files": mine}
    theirs = json.loads(path.read_text())["files"]
    return {"compared_with": str(other), "identical": mine == theirs, "files": mine, "theirs": theirs}


def prepare(runs: Path, transfer_data: Path = TRANSFER_DATA) -> dict[str, Any]:
    """Corpus, SmolLM2-135M's capture (train and held-out), ``data.json``. Resumable: a killed
    capture keeps its finished shards; rerun after a kill."""
    from avokit.capture import run_capture
    from avokit.corpus import build_corpus, load_split
    from avokit.student import load_student_tokenizer

    recipe = crossing_recipe(runs)
    write_python_heads(recipe)
    manifest = build_corpus(recipe)
    if not (recipe.run_dir / "cache" / TEACHER / "manifest.json").is_file():
        t0 = time.perf_counter()
        run_capture(recipe, teacher=TEACHER)
        _write_json(runs / "data" / "timings" / f"{TEACHER}-{os.getpid()}.json",
                    {"wall_s": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0],
                     "cpu": cpu_model(), "threads": os.environ.get("OMP_NUM_THREADS")})
    tok = load_student_tokenizer(teacher_dir())
    splits = {s: load_split(recipe, s) for s in ("train", "validation", "heldout")}
    tokens = {s: {d: sum(len(tok(x.text)["input_ids"]) for x in docs if x.domain == d)
                  for d in sorted({x.domain for x in docs})} for s, docs in splits.items()}
    cache = json.loads((recipe.run_dir / "cache" / TEACHER / "manifest.json").read_text())
    info = {"corpus": manifest.model_dump(mode="json"),
            "corpus_manifest_sha256": file_sha256(recipe.run_dir / "corpus" / "manifest.json"),
            "same_split_as_transfer": same_split_as(recipe.run_dir / "corpus", transfer_data / "corpus"),
            "teacher": TEACHER, "teacher_dir": str(teacher_dir()),
            "teacher_tokens": {s: {**v, "total": sum(v.values())} for s, v in tokens.items()},
            "teacher_test_bpb": teacher_test_bpb(runs, [TEACHER])[TEACHER],
            "teacher_cache": {k: cache.get(k) for k in ("compute_dtype", "logprob_bits", "top_k", "n_docs", "n_tokens")},
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    _write_json(runs / "data" / "data.json", info)
    return info
