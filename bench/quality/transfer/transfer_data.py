"""The transfer benchmark's data (bench/quality/transfer/transfer.py): the corpus of transfer.yaml, the
Python file heads it names, the teachers' captures, the student's folder and token counts,
through the study data path (:mod:`bench.quality.study.data`, ``TRANSFER_DATA``).

``prepare`` writes ``RUNS/data/``: ``corpus/`` (split by source text), ``cache/<teacher>/``
(avokit's normal capture, one process per teacher, resumable), ``python-files.jsonl``,
``timings/`` and ``data.json`` (corpus manifest and its sha256, the student's tokens per split
and domain, each teacher's own test BPB from its cache and the dtype it computed in).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avokit.recipe import Recipe
from bench.quality.study.data import (
    OPTIONS,
    STUDENT,
    DataSource,
    _write_json,
    set_inside_top_k,
    student_dir,
    write_source_once,
)
from bench.quality.study.data import capture as capture_teacher
from bench.quality.study.data import prepare as prepare_data

__all__ = ["GEMMA", "OPTIONS", "QWEN", "STUDENT", "TEACHERS", "TRANSFER_DATA", "_write_json", "capture",
           "data_recipe", "prepare", "set_inside_top_k", "student_dir", "write_python_heads"]

SOURCE = Path(__file__).with_name("transfer.yaml")
GEMMA, QWEN = TEACHERS = ["gemma3-270m", "qwen2.5-coder-0.5b"]
PYTHON_FILES = "python-files.jsonl"


def write_python_heads(recipe: Recipe) -> Path:
    """python-files.jsonl: the first segment of each of the first ``max_docs`` python-source
    files that have one (one source text per file; see transfer.yaml). Written once."""
    from avokit.corpus.segment import segment_lines
    from avokit.corpus.sources import read_source
    from avokit.recipe.corpus import CorpusSource

    def heads(max_chars: int) -> Iterator[dict[str, Any]]:
        for raw in read_source(CorpusSource(kind="builtin", name="python-source"), recipe.base_dir):
            pieces = segment_lines(raw.text, min(recipe.corpus.min_chars, max_chars), max_chars)
            if pieces:
                yield {"text": pieces[0], "origin": raw.origin, "license": raw.license}

    return write_source_once(recipe, PYTHON_FILES, heads)


TRANSFER_DATA = DataSource(yaml=SOURCE, module="bench.quality.transfer.transfer", teachers=tuple(TEACHERS),
                           writers=(write_python_heads,))


def data_recipe(runs: Path) -> Recipe:
    """transfer.yaml with its run folder at ``runs/data`` and the Python file heads there
    (and ``capture.inside_top_k`` from ``runs/data/options.json``, where prepare set it)."""
    return TRANSFER_DATA.recipe(runs)


def capture(runs: Path, teacher: str) -> None:
    """Capture one teacher over train and held-out (resumable: finished shards are kept)."""
    capture_teacher(TRANSFER_DATA, runs, teacher)


def prepare(runs: Path, teachers: list[str]) -> dict[str, Any]:
    """Corpus, the captures of ``teachers`` (a child process each), then, once every teacher is
    captured, ``runs/data/data.json`` (:func:`bench.quality.study.data.prepare`)."""
    return prepare_data(TRANSFER_DATA, runs, teachers)
