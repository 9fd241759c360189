"""Task format and task scoring: multiple choice by log-likelihood, generation by exact match.

A task on disk is a small YAML file next to a JSONL file::

    name: my_task
    kind: multiple_choice          # or: generation
    data: my_task.jsonl            # relative to the YAML file
    prompt: "Question: {question}\\nAnswer:"
    choices: choices               # field holding the list of choice strings (multiple_choice)
    answer: answer                 # field: gold index (multiple_choice) or gold string (generation)
    choice_prefix: " "             # put before each choice
    num_fewshot: 0
    until: ["\\n"]                 # stop strings (generation)

Scores carry a 95% Wilson interval and their item count.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avokit.errors import AvokitError
from avokit.evaluate.scoring import greedy_generate, loglikelihoods


class TaskError(AvokitError):
    """A task file is missing, malformed, or an item lacks a field; names the file and field."""


class TaskSpec(BaseModel):
    """The YAML half of a task."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["multiple_choice", "generation"] = "multiple_choice"
    data: Path
    prompt: str
    choices: str = "choices"
    answer: str = "answer"
    choice_prefix: str = " "
    num_fewshot: int = Field(default=0, ge=0)
    until: list[str] = ["\n"]
    max_new_tokens: int = Field(default=32, gt=0)


@dataclass(frozen=True)
class TaskItem:
    """One evaluation item, already rendered: the prompt text, the choices, the gold answer."""

    item_id: str
    prompt: str
    choices: tuple[str, ...] = ()
    gold: int = -1  # multiple choice: index into choices
    answer: str = ""  # generation: gold string

    def reference_text(self) -> str:
        """Prompt plus gold answer: the text checked against the training corpus."""
        if self.choices:
            return self.prompt + self.choices[self.gold]
        return self.prompt + " " + self.answer


@dataclass(frozen=True)
class Task:
    """A named list of items of one kind."""

    name: str
    kind: Literal["multiple_choice", "generation"]
    items: list[TaskItem]
    until: tuple[str, ...] = ("\n",)
    max_new_tokens: int = 32
    n_available: int = 0  # items before the max_items cap

    def subset(self, max_items: int | None) -> Task:
        """A fixed, deterministic subset: items ordered by a hash of their id, first max_items.

        Hash order (not file order) so the subset is not biased by how the file is sorted,
        and the same items are chosen on every run and for every model."""
        n_avail = len(self.items)
        items = self.items
        if max_items is not None and len(items) > max_items:
            items = sorted(items, key=lambda it: hashlib.sha256(it.item_id.encode()).hexdigest())[:max_items]
        return Task(self.name, self.kind, list(items), self.until, self.max_new_tokens, n_available=n_avail)


@dataclass(frozen=True)
class Score:
    """A proportion with its 95% Wilson interval and item count."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int | list[float]]:
        """JSON form."""
        return {"value": self.value, "ci95": [self.low, self.high], "n": self.n}


@dataclass
class TaskResult:
    """Per-item outcomes of one model on one task, and its scores."""

    task: str
    kind: str
    correct: dict[str, bool] = field(default_factory=dict)  # item_id -> acc (or exact match)
    correct_norm: dict[str, bool] = field(default_factory=dict)  # item_id -> acc per byte

    def scores(self, ids: set[str] | None = None) -> dict[str, Score]:
        """acc (and acc_norm for multiple choice) over all items, or over ``ids`` only."""
        keep = [i for i in self.correct if ids is None or i in ids]
        out = {"acc" if self.kind == "multiple_choice" else "exact_match": wilson([self.correct[i] for i in keep])}
        if self.kind == "multiple_choice":
            out["acc_norm"] = wilson([self.correct_norm[i] for i in keep])
        return out


def wilson(outcomes: list[bool], z: float = 1.959964) -> Score:
    """Proportion of True with its Wilson score interval (sensible at 0, 1 and small n)."""
    n = len(outcomes)
    if n == 0:
        return Score(float("nan"), float("nan"), float("nan"), 0)
    p = sum(outcomes) / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Score(p, max(0.0, centre - half), min(1.0, centre + half), n)


def _render(template: str, row: dict[str, Any], where: str) -> str:
    try:
        return template.format(**row)
    except KeyError as err:
        raise TaskError(f"{where}: prompt template uses field {err.args[0]!r} the item does not have") from None


def load_task(yaml_path: Path) -> Task:
    """Read a task YAML and its JSONL data; errors name the file, line and field."""
    if not yaml_path.is_file():
        raise TaskError(f"{yaml_path}: task file not found")
    try:
        spec = TaskSpec.model_validate(yaml.safe_load(yaml_path.read_text(encoding="utf-8")))
    except (ValidationError, yaml.YAMLError) as err:
        raise TaskError(f"{yaml_path}: invalid task spec: {err}") from None
    data = spec.data if spec.data.is_absolute() else yaml_path.parent / spec.data
    if not data.is_file():
        raise TaskError(f"{yaml_path}: data: file not found: {data}")
    rows = []
    for ln, line in enumerate(data.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise TaskError(f"{data}:{ln}: not valid JSON: {err}") from None
    items = []
    seen: set[str] = set()
    for ln, row in enumerate(rows, 1):
        where = f"{data}:{ln}"
        if spec.answer not in row:
            raise TaskError(f"{where}: missing answer field {spec.answer!r}")
        prompt = _render(spec.prompt, row, where)
        item_id = str(row.get("id", f"{spec.name}-{ln}"))
        if item_id in seen:
            # results, subsets and the clean/dirty split are keyed by id: a repeat would overwrite
            raise TaskError(f"{where}: duplicate item id {item_id!r}")
        seen.add(item_id)
        if spec.kind == "multiple_choice":
            if not isinstance(row.get(spec.choices), list):
                raise TaskError(f"{where}: choices field {spec.choices!r} must be a list")
            choices = tuple(spec.choice_prefix + str(c) for c in row[spec.choices])
            gold = int(row[spec.answer])
            if not 0 <= gold < len(choices):
                raise TaskError(f"{where}: answer {gold} is not an index into {len(choices)} choices")
            items.append(TaskItem(item_id, prompt, choices, gold))
        else:
            items.append(TaskItem(item_id, prompt, answer=str(row[spec.answer])))
    items = with_fewshot(items, spec.num_fewshot)
    return Task(spec.name, spec.kind, items, tuple(spec.until), spec.max_new_tokens, n_available=len(items))


def with_fewshot(items: list[TaskItem], k: int) -> list[TaskItem]:
    """Prefix each item's prompt with k other items solved (fixed choice: the next k items
    cyclically), separated by blank lines. Items used as shots stay in the set: this is a
    prompt format, not training."""
    if k <= 0 or len(items) < 2:
        return items
    out = []
    for i, it in enumerate(items):
        shots = [items[(i + j) % len(items)] for j in range(1, min(k, len(items) - 1) + 1)]
        prefix = "".join(s.reference_text() + "\n\n" for s in shots)
        out.append(TaskItem(it.item_id, prefix + it.prompt, it.choices, it.gold, it.answer))
    return out


def run_task(model: Any, tokenizer: Any, task: Task, max_length: int = 1024, batch_size: int = 8) -> TaskResult:
    """Score one model on one task.

    Multiple choice: the chosen answer is the highest ``log p(choice | prompt)`` (acc) and the
    highest log-prob per UTF-8 byte of the choice (acc_norm, independent of tokenizer).
    Generation: greedy decode to a stop string; exact match after stripping whitespace.
    """
    res = TaskResult(task.name, task.kind)
    if task.kind == "multiple_choice":
        reqs = [(it.prompt, c) for it in task.items for c in it.choices]
        lls = loglikelihoods(model, tokenizer, reqs, max_length=max_length, batch_size=batch_size)
        k = 0
        for it in task.items:
            part = lls[k : k + len(it.choices)]
            k += len(it.choices)
            raw = [r.logprob for r in part]
            per_byte = [r.logprob / max(1, len(c.encode("utf-8"))) for r, c in zip(part, it.choices)]
            res.correct[it.item_id] = max(range(len(raw)), key=raw.__getitem__) == it.gold
            res.correct_norm[it.item_id] = max(range(len(per_byte)), key=per_byte.__getitem__) == it.gold
    else:
        for it in task.items:
            out = greedy_generate(model, tokenizer, it.prompt, list(task.until), task.max_new_tokens, max_length)
            res.correct[it.item_id] = out.strip() == it.answer.strip()
    return res
