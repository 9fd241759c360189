"""Recipe validation: good recipes load, every kind of bad input names its field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avokit.errors import RecipeError
from avokit.recipe import BUILTIN_RECIPES, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def minimal() -> dict:
    return {
        "name": "t",
        "corpus": {"sources": [{"kind": "builtin", "name": "lambada-passages"}]},
        "teachers": [{"name": "smollm2-135m", "kind": "registry"}],
    }


def error_of(data: dict, base: Path = Path(".")) -> str:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data, base, source="r.yaml")
    return str(info.value)


@pytest.mark.parametrize("name", BUILTIN_RECIPES)
def test_builtin_recipes_load(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name
    assert len(recipe.teachers) >= 2


def test_repo_recipes_validate_without_local_inputs() -> None:
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        recipe = load_recipe(path, check_paths=False)
        assert recipe.teachers, path


def test_minimal_recipe_gets_defaults() -> None:
    recipe = recipe_from_dict(minimal(), Path("/tmp"))
    assert recipe.capture.top_k == 32
    assert recipe.run_dir == Path("/tmp/runs/t")


def test_missing_field_is_named() -> None:
    data = minimal()
    del data["teachers"]
    assert "r.yaml: teachers: Field required" in error_of(data)


def test_wrong_type_is_named() -> None:
    data = minimal()
    data["train"] = {"steps": "many"}
    assert "train.steps: Input should be a valid integer" in error_of(data)


def test_bad_choice_lists_the_choices() -> None:
    data = minimal()
    data["teachers"].append({"name": "x", "kind": "onnx"})
    msg = error_of(data)
    assert "teachers[1].kind: must be one of" in msg
    for kind in ("registry", "hf", "gguf", "openai"):
        assert kind in msg


def test_unknown_key_is_an_error() -> None:
    data = minimal()
    data["capture"] = {"topk": 8}
    assert "capture.topk: unknown key" in error_of(data)


def test_cross_field_rule_is_named() -> None:
    data = minimal()
    data["teachers"] = [{"name": "a", "kind": "hf"}]
    assert "teachers[0]: a hf teacher needs `path`" in error_of(data)


def test_duplicate_teacher_names_refused() -> None:
    data = minimal()
    data["teachers"].append({"name": "smollm2-135m", "kind": "registry"})
    assert "used twice" in error_of(data)


def test_bad_path_names_field_and_file(tmp_path: Path) -> None:
    data = minimal()
    data["corpus"]["sources"] = [{"kind": "jsonl", "path": "data/missing.jsonl"}]
    msg = error_of(data, tmp_path)
    assert "corpus.sources[0].path: file not found" in msg
    assert str(tmp_path / "data" / "missing.jsonl") in msg


def test_paths_resolve_relative_to_recipe_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "docs.jsonl").write_text('{"text": "hi"}\n')
    data = minimal()
    data["corpus"]["sources"] = [{"kind": "jsonl", "path": "data/docs.jsonl"}]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe = load_recipe(path)
    assert recipe.resolve(recipe.corpus.sources[0].path) == tmp_path / "data" / "docs.jsonl"


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="bad.yaml: not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(top)


def test_non_utf8_recipe_and_yaml_error_are_one_line(tmp_path: Path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(RecipeError, match=r"latin.yaml: not UTF-8 text \(byte 9"):
        load_recipe(latin)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nteachers: [unclosed\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(bad)
    assert "\n" not in str(info.value) and "line 3" in str(info.value)


def test_unknown_registry_teacher_is_named() -> None:
    data = minimal()
    data["teachers"].append({"name": "llama-9000", "kind": "registry"})
    msg = error_of(data)
    assert "teachers[1].name: unknown registry teacher 'llama-9000'" in msg
    assert "gemma3-270m" in msg and "smollm2-135m" in msg
