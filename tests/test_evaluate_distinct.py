"""distinct-n (avokit.evaluate.distinct): the repetition measure beside teacher-judged BPB, shared
by the evaluation report and the on-policy bench; properties, then the report's use of it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avokit.contracts.metrics import Generations
from avokit.evaluate.distinct import (
    REPETITIVE_DISTINCT2,
    char_distinct,
    distinct_n,
    is_repetitive,
    summarise_distinct,
    text_distinct,
)
from avokit.evaluate.generations import REFERENCE, GenerationJudge, Prompt
from avokit.evaluate.report_generations import generation_section
from avokit.recipe.evaluation import GenerationConfig

# every script the corpora hold: Latin, CJK, code punctuation and whitespace
_CHARS = st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs"))
_TEXT = st.text(_CHARS, max_size=80)


@settings(max_examples=60, deadline=None)
@given(ch=_CHARS, length=st.integers(1, 200), n=st.integers(1, 4))
def test_one_repeated_character_has_the_lowest_value_its_length_allows(ch: str, length: int, n: int) -> None:
    # one n-gram, (length - n + 1) times: no text of that length can score lower
    expected = 1 / (length - n + 1) if length >= n else None
    assert text_distinct(ch * length, n) == (pytest.approx(expected) if expected else None)


@settings(max_examples=60, deadline=None)
@given(chars=st.lists(_CHARS, unique=True, min_size=1, max_size=60), n=st.integers(1, 4))
def test_text_without_a_repeated_character_scores_one(chars: list[str], n: int) -> None:
    expected = 1.0 if len(chars) >= n else None
    assert text_distinct("".join(chars), n) == expected


@settings(max_examples=80, deadline=None)
@given(text=_TEXT, n=st.integers(1, 4))
def test_value_lies_in_zero_one_and_short_text_has_none(text: str, n: int) -> None:
    value = text_distinct(text, n)
    if len(text) < n:
        assert value is None  # nothing to count, and no division by zero
    else:
        assert value is not None and 0.0 < value <= 1.0


@settings(max_examples=60, deadline=None)
@given(text=_TEXT, n=st.integers(1, 4), offset=st.integers(0x4E00, 0x4E00 + 5000))
def test_renaming_the_characters_changes_nothing(text: str, n: int, offset: int) -> None:
    # distinct-n counts only which units repeat, not which they are: written in CJK characters
    # instead of Latin letters (one character for each), the same text scores the same
    alphabet = sorted(set(text))
    renamed = text.translate({ord(c): offset + i for i, c in enumerate(alphabet)})
    assert text_distinct(renamed, n) == text_distinct(text, n)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(_TEXT, min_size=1, max_size=5), n=st.integers(1, 3))
def test_pooling_ignores_order_and_halves_under_duplication(texts: list[str], n: int) -> None:
    value = distinct_n(texts, n)
    assert distinct_n(list(reversed(texts)), n) == value
    # every n-gram twice: the same unique n-grams over twice as many
    assert distinct_n(texts + texts, n) == (None if value is None else pytest.approx(value / 2))


def test_n_below_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        distinct_n(["abc"], 0)


def test_repetitive_below_the_threshold_only() -> None:
    assert is_repetitive("#" * 48) and char_distinct("#" * 48)["distinct2"] == pytest.approx(1 / 47)
    assert not is_repetitive("The river ran under the old stone bridge at night.")
    assert not is_repetitive("这个酒店很好，早餐也不错。房间干净，服务热情。")
    assert not is_repetitive("a") and not is_repetitive("")  # too short to say
    loop = "ab" * 24  # period 2: 2 bigrams out of 47
    assert text_distinct(loop, 2) == pytest.approx(2 / 47) and 2 / 47 < REPETITIVE_DISTINCT2 and is_repetitive(loop)
    rows = [char_distinct(t) for t in ("#" * 10, "abcd", "")]
    summary = summarise_distinct(rows)
    assert summary["repetitive"] == 1 and summary["continuations"] == 3
    assert summary["distinct2"] == pytest.approx((1 / 9 + 1.0) / 2)  # the empty text counts in neither mean
    assert summarise_distinct([char_distinct("")])["distinct1"] is None


def test_report_marks_repetitive_continuations_and_summarises_per_domain() -> None:
    prompts = [Prompt("e1", "english", "The river", " ran under the bridge and on"),
               Prompt("c1", "code", "def f(x):", "\n    return x + 1\n")]
    judge = GenerationJudge(prompts, GenerationConfig(prompts_per_domain=1, prompt_bytes=16, max_new_tokens=8))
    judge.texts = {"baseline": ["#" * 30, " " * 20], "student": [" ran to the sea", "\n    return x"]}
    gen = Generations.model_validate(judge.as_metrics()).model_dump()  # the metrics.json contract holds
    assert gen["repetitive_below"] == REPETITIVE_DISTINCT2
    assert gen["prompts"][0]["distinct"]["baseline"]["repetitive"]
    assert gen["prompts"][0]["distinct"]["student"] == char_distinct(" ran to the sea")
    assert not gen["prompts"][0]["distinct"][REFERENCE]["repetitive"]
    assert gen["repetition"]["baseline"]["all"]["repetitive"] == 2
    assert gen["repetition"]["student"]["code"] == summarise_distinct([char_distinct("\n    return x")])
    assert gen["repetition"]["student"]["all"]["repetitive"] == 0

    md = "\n".join(generation_section(gen))
    assert "| model | continuation | distinct-1 | distinct-2 |" in md
    assert f"| baseline | {'#' * 30} | 0.033 | 0.034 **repetitive** |" in md
    assert "only comparable among continuations that are not marked **repetitive**" in md
    assert "| baseline | 0.053 (1/1) | 0.034 (1/1) | 0.044 (2/2) |" in md  # code, english, all
    # metrics written before the measure existed still render, without the figures
    old = {**gen, "prompts": [{k: v for k, v in p.items() if k != "distinct"} for p in gen["prompts"]]}
    del old["repetition"], old["repetitive_below"]
    old_md = "\n".join(generation_section(Generations.model_validate(old).model_dump()))
    assert "| baseline | " + "#" * 30 + " | n/a | n/a |" in old_md and "Repetition, over" not in old_md
