"""Contamination: a corpus that contains eval items is caught, and those items are scored apart."""

from __future__ import annotations

from avokit.evaluate.contamination import check_contamination, words
from avokit.evaluate.tasks import Task, TaskItem, TaskResult

QUESTIONS = [
    "Which gas do green plants take in from the air to make their food during photosynthesis",
    "What is the name of the force that pulls objects toward the centre of the earth",
    "How many legs does an adult insect such as a beetle or an ant usually have",
    "Which organ of the human body pumps blood through the arteries and the veins",
]
ANSWERS = [" carbon dioxide", " gravity", " six", " the heart"]


def _task() -> Task:
    items = [TaskItem(f"sci/{i}", f"Question: {q}?\nAnswer:", (ANSWERS[i], " water"), 0) for i, q in enumerate(QUESTIONS)]
    return Task("sci", "multiple_choice", items)


def test_verbatim_and_reformatted_items_are_caught_clean_items_are_not() -> None:
    corpus = [
        "A blog post. " + QUESTIONS[0] + "? The answer is carbon dioxide, as every student knows.",
        # reformatted (case, punctuation) copy of item 2: word-level n-grams still match
        "QUIZ!!! " + QUESTIONS[2].upper().replace(" ", " , ") + " -- six.",
        "An unrelated paragraph about the history of bridges and the engineers who built them in stone.",
    ]
    rep = check_contamination(corpus, [_task()], n=13)
    assert rep.dirty_ids("sci") == {"sci/0", "sci/2"}
    assert rep.per_task["sci"] == {"items": 4, "contaminated": 2, "rate": 0.5}
    assert rep.overall_rate == 0.5
    hit = next(i for i in rep.items if i.item_id == "sci/0")
    # 16 question words of 20 ("question", "answer" and the answer words are not in the span)
    assert hit.ngram_hits == 4 and hit.token_overlap == 0.8


def test_short_shared_phrases_are_not_contamination() -> None:
    # 12 shared words < 13-gram and below the Llama-2 80% coverage: clean
    twelve = " ".join(words(QUESTIONS[1])[:12])
    rep = check_contamination([f"Intro. {twelve}. Something else entirely here."], [_task()], n=13)
    assert rep.items == [] and rep.overall_rate == 0.0


def test_clean_and_dirty_subsets_scored_separately() -> None:
    res = TaskResult("sci", "multiple_choice",
                     correct={"sci/0": True, "sci/1": False, "sci/2": True, "sci/3": False},
                     correct_norm={"sci/0": True, "sci/1": True, "sci/2": True, "sci/3": False})
    dirty = {"sci/0", "sci/2"}
    assert res.scores()["acc"].value == 0.5
    assert res.scores(dirty)["acc"].value == 1.0 and res.scores(dirty)["acc"].n == 2
    clean = res.scores({"sci/1", "sci/3"})
    assert clean["acc"].value == 0.0 and clean["acc_norm"].value == 0.5
