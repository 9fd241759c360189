"""Contamination between the training text and every evaluation item.

Two measures per item, both over lower-cased word tokens (tokenizer-independent):
- 13-gram overlap (GPT-3 style): the item shares at least one ``n``-gram with the corpus.
- Llama-2 style token overlap: the fraction of the item's tokens covered by a shared span of
  at least ``min_span`` tokens; the item is dirty above ``dirty_fraction``.
An item is *contaminated* if either says so; the report scores clean and dirty items apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from avokit.corpus.words import words
from avokit.evaluate.tasks import Task


def ngram_set(texts: Iterable[str], n: int) -> set[int]:
    """Hashes of every word n-gram in ``texts`` (hashes keep memory flat on big corpora)."""
    out: set[int] = set()
    for t in texts:
        w = words(t)
        out.update(hash(tuple(w[i : i + n])) for i in range(len(w) - n + 1))
    return out


@dataclass(frozen=True)
class ItemContamination:
    """One evaluation item's overlap with the training text."""

    task: str
    item_id: str
    ngram_hits: int  # shared n-grams of size n
    token_overlap: float  # Llama-2 style covered-token fraction
    contaminated: bool


@dataclass(frozen=True)
class ContaminationReport:
    """Per-task results; ``items`` lists only contaminated items."""

    n: int
    min_span: int
    dirty_fraction: float
    per_task: dict[str, dict[str, float | int]]  # task -> {"items", "contaminated", "rate"}
    items: list[ItemContamination]

    def dirty_ids(self, task: str) -> set[str]:
        """Ids of contaminated items of ``task``."""
        return {i.item_id for i in self.items if i.task == task}

    @property
    def overall_rate(self) -> float:
        """Contaminated items / all items over every task."""
        total = sum(int(v["items"]) for v in self.per_task.values())
        dirty = sum(int(v["contaminated"]) for v in self.per_task.values())
        return dirty / total if total else 0.0


def _coverage(item_words: list[str], span_grams: set[int], span: int) -> float:
    if not item_words:
        return 0.0
    covered = [False] * len(item_words)
    for i in range(len(item_words) - span + 1):
        if hash(tuple(item_words[i : i + span])) in span_grams:
            for j in range(i, i + span):
                covered[j] = True
    return sum(covered) / len(item_words)


def check_contamination(
    corpus_texts: Iterable[str], tasks: list[Task], n: int = 13, min_span: int = 10, dirty_fraction: float = 0.8
) -> ContaminationReport:
    """Compare every item's prompt + gold answer against the corpus texts."""
    texts = list(corpus_texts)
    grams_n = ngram_set(texts, n)
    grams_span = grams_n if min_span == n else ngram_set(texts, min_span)
    per_task: dict[str, dict[str, float | int]] = {}
    dirty: list[ItemContamination] = []
    for task in tasks:
        bad = 0
        for it in task.items:
            w = words(it.reference_text())
            hits = sum(hash(tuple(w[i : i + n])) in grams_n for i in range(len(w) - n + 1))
            cov = _coverage(w, grams_span, min_span)
            if hits > 0 or cov > dirty_fraction:
                bad += 1
                dirty.append(ItemContamination(task.name, it.item_id, hits, cov, True))
        per_task[task.name] = {
            "items": len(task.items),
            "contaminated": bad,
            "rate": bad / len(task.items) if task.items else 0.0,
        }
    return ContaminationReport(n, min_span, dirty_fraction, per_task, dirty)
