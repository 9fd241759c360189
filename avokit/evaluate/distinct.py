"""Repetition of generated text: distinct-n (Li et al., 2016), unique n-grams / all n-grams.

A teacher finds repeated text easy to predict, so a model stuck in a loop ("#####…") gets a
lower teacher-judged bits per byte than real prose. distinct-n is the number printed beside it
so that this cannot pass for good writing.

:func:`distinct_n` is the one definition, over any sequences of hashable units: the on-policy
bench passes student token ids, the evaluation report passes text (its units are then Unicode
characters, :func:`text_distinct`). The report uses characters because they are

* tokenizer-independent: start, baseline, student, the document's own text and another
  recipe's student are measured in the same unit, whatever tokenizer wrote them;
* never split: an n-gram of UTF-8 bytes would cut a Chinese character (3 bytes) in pieces,
  and every CJK character shares its lead byte with thousands of others, so byte n-grams read
  Chinese as repetitive; whitespace words do not exist in Chinese, and student tokens differ
  between recipes.

Levels still differ by domain (English reuses 26 letters, Chinese thousands of characters, code
its indentation), so compare distinct-n between models within a domain. The
:data:`REPETITIVE_DISTINCT2` threshold sits below the prose we measured (see there).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

# Below this character distinct-2 a continuation is marked "repetitive". Measured over windows of
# 48, 100, 200 and 400 characters (every 97th character of the first 300 texts of each built-in
# source): English prose (LAMBADA, qasper) never fell below 0.2 (lowest 0.21); Chinese reviews
# did in 2 of 6606 48-character windows (a review repeating one character); Python source in 0.4%
# (48 characters) to 7.7% (400) of windows, all data tables (spinner frames, colour tuples). The
# flag marks repetitive text whoever wrote it, a `reference` included. A loop of period p over L
# characters has distinct-2 of at most p / (L - 1): "#####…" over 48 characters is 0.02.
REPETITIVE_DISTINCT2 = 0.2


def distinct_n(sequences: Sequence[Sequence[Hashable]], n: int) -> float | None:
    """Unique n-grams / all n-grams of ``sequences`` pooled (an n-gram never spans two
    sequences), in (0, 1]; None when no sequence has ``n`` units (nothing to count).

    Raises:
        ValueError: ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"distinct-n needs n >= 1, got {n}")
    grams = [tuple(seq[i:i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def text_distinct(text: str, n: int) -> float | None:
    """distinct-n of ``text`` over its Unicode characters (see the module docstring)."""
    return distinct_n([text], n)


def is_repetitive(text: str) -> bool:
    """Whether ``text``'s character distinct-2 is below :data:`REPETITIVE_DISTINCT2`; a text
    too short to have a bigram is not called repetitive."""
    d2 = text_distinct(text, 2)
    return d2 is not None and d2 < REPETITIVE_DISTINCT2


def char_distinct(text: str) -> dict[str, float | bool | None]:
    """``text``'s character distinct-1 and distinct-2 and whether it is repetitive: one
    continuation's entry in the report (:class:`avokit.contracts.metrics.ContinuationDistinct`)."""
    return {"distinct1": text_distinct(text, 1), "distinct2": text_distinct(text, 2), "repetitive": is_repetitive(text)}


def summarise_distinct(rows: Sequence[dict[str, float | bool | None]]) -> dict[str, float | int | None]:
    """Mean distinct-1 and distinct-2 over ``rows`` (of :func:`char_distinct`; a text with
    nothing to count is left out of the mean, which is None when no text had any), how many
    rows are repetitive and how many there are
    (:class:`avokit.contracts.metrics.RepetitionSummary`)."""
    out: dict[str, float | int | None] = {}
    for key in ("distinct1", "distinct2"):
        values = [float(v) for r in rows if (v := r[key]) is not None]
        out[key] = sum(values) / len(values) if values else None
    out["repetitive"] = sum(bool(r["repetitive"]) for r in rows)
    out["continuations"] = len(rows)
    return out
