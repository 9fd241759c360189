"""The on-policy study's data: the fusion study's data folder, linked (same corpus, splits and
caches; never captured again), and the sequence-level arm's teacher-written text.

``RUNS/data`` is a link to ``--data`` (default ``runs/bench-fusion-pretrained/data``).
``RUNS/seqdata`` holds the ``seq`` arm's extra text: ``prompts.jsonl`` (the first
``gen_prefix_chars`` characters of ``gen_prompts`` training documents per domain), avokit's
generate stage over them with both teachers (``generated/``: each teacher's continuations,
deduplicated against the whole corpus), and ``cache/<teacher>``: the teacher's cache of the
corpus (its shards linked) plus its live records of every generated document, as the issue-16
study built them (:func:`bench.quality.onpolicy.onpolicy.extend_caches`). Held-out documents are
never prompts. ``seq.json`` records the one-off cost (generation and capture wall seconds).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from avokit.recipe import Recipe
from bench.quality.onpolicy.onpolicy import extend_caches, write_prompts
from bench.quality.onpolicy_pretrained import arms
from bench.quality.onpolicy_pretrained.arms import SEQDATA, Options
from bench.quality.study.data import _write_json
from bench.quality.study.study import _link

DEFAULT_DATA = "runs/bench-fusion-pretrained/data"


def link_data(runs: Path, data: Path) -> None:
    """``runs/data`` -> ``data`` (the fusion study's data folder: corpus, caches, data.json);
    refused when it is not finished or ``runs/data`` is another folder."""
    if not (data / "data.json").is_file():
        raise SystemExit(f"{data}/data.json missing: the fusion study's `prepare` has not finished there")
    link = runs / "data"
    if link.is_symlink() or link.exists():
        if link.resolve() != data.resolve():
            raise SystemExit(f"{link} is {link.resolve()}, not {data.resolve()}; use another --runs folder")
        return
    _link(data, link)


def generate_section(runs: Path, opts: Options) -> dict[str, Any]:
    """The ``generate`` section of the teacher-written text: both teachers continue each
    prompt once at temperature 1 (seeded per teacher and prompt)."""
    return {"prompts": [{"kind": "jsonl", "path": str((runs / SEQDATA / "prompts.jsonl").resolve())}],
            "max_new_tokens": opts.gen_tokens, "temperature": 1.0, "seed": 0, "min_chars": 32}


def seq_recipe(runs: Path, opts: Options) -> Recipe:
    """The data recipe renamed ``seqdata``, with the generate section; its corpus is linked."""
    data = arms.DATA.recipe(runs)
    rec = Recipe.model_validate({**data.model_dump(mode="json"), "name": SEQDATA, "base_dir": data.base_dir,
                                 "generate": generate_section(runs, opts)})
    _link(runs / "data" / "corpus", rec.run_dir / "corpus")
    return rec


def load_checked(rec: Recipe, teacher: str) -> Any:
    """A teacher as the trainer loads it for live scoring: in the dtype its cache was captured in."""
    from avokit.teachers.fidelity import checked_config
    from avokit.teachers.load import load_teacher

    return load_teacher(checked_config(rec, rec.teacher(teacher)), rec.base_dir, rec.capture)


def prepare_seq(runs: Path, opts: Options) -> dict[str, Any]:
    """The teacher-written text and the caches that hold it (resumable: finished parts are
    kept); writes ``seqdata/generate.json`` (the section the ``seq`` arm trains with) last."""
    from avokit.corpus import read_documents
    from avokit.generate import run_generate

    rec = seq_recipe(runs, opts)
    write_prompts(rec.run_dir / "prompts.jsonl", read_documents(runs / "data" / "corpus" / "train.parquet"),
                  opts.gen_prompts, opts.gen_prefix_chars)
    t0 = time.perf_counter()
    out = run_generate(rec, build=False)
    gen_s = round(time.perf_counter() - t0, 1)
    generated = read_documents(out / "documents.parquet")
    capture_s = extend_caches(runs / "data" / "cache", rec.run_dir / "cache", list(arms.DATA.teachers), generated,
                              lambda t: load_checked(rec, t))
    cost_path = rec.run_dir / "seq.json"
    old = json.loads(cost_path.read_text()) if cost_path.is_file() else []  # one entry per process
    _write_json(cost_path, [*old, {"generate_wall_s": gen_s, "capture_wall_s": capture_s}])
    _write_json(rec.run_dir / "generate.json", generate_section(runs, opts))
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return {"generated_documents": len(generated), "manifest": manifest}
