"""YAML in, validated recipe out; errors name the field path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from avokit.errors import RecipeError
from avokit.recipe.recipe import Recipe

# the first is what `avokit distill` runs without a recipe (README "The default recipe")
BUILTIN_RECIPES = ("avocado-smol", "avocado-mini")
DEFAULT_RECIPE = BUILTIN_RECIPES[0]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(recipe)"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``source: field.path: message``."""
    lines = []
    for e in err.errors():
        # Drop pydantic's discriminator/validator tags from the path: users never wrote them.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            msg = f"must be one of {expected.replace(chr(39), '')}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{source}: {_loc(loc)}: {msg}")
    return "\n".join(lines)


def recipe_from_dict(
    data: Any, base_dir: Path, source: str = "recipe", check_paths: bool = True
) -> Recipe:
    """Validate a parsed recipe mapping; relative paths resolve against ``base_dir``.

    ``check_paths=False`` skips the existence check of local files (a dry-run plan for
    another machine).
    """
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: the recipe must be a mapping of sections, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate({**data, "base_dir": base_dir})
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, source)) from None
    _check_registry_names(recipe, source)
    if check_paths:
        _check_paths(recipe, source)
    return recipe


def _check_registry_names(recipe: Recipe, source: str) -> None:
    """``kind: registry`` teachers must name a built-in teacher (known on every machine)."""
    from avokit.catalog import TEACHERS

    for i, t in enumerate(recipe.teachers):
        if t.kind == "registry" and t.registry_name not in TEACHERS:
            field = "model" if t.model else "name"
            known = ", ".join(sorted(TEACHERS))
            raise RecipeError(f"{source}: teachers[{i}].{field}: unknown registry teacher "
                              f"{t.registry_name!r} (registry teachers: {known})")


def _check_paths(recipe: Recipe, source: str) -> None:
    """Local files a recipe names must exist (resolved against the recipe's folder)."""
    checks: list[tuple[str, Path | None]] = []
    for i, s in enumerate(recipe.corpus.sources):
        checks.append((f"corpus.sources[{i}].path", s.path))
    for i, t in enumerate(recipe.teachers):
        checks.append((f"teachers[{i}].path", t.path))
        checks.append((f"teachers[{i}].tokenizer", t.tokenizer))
    checks.append(("student.pretrained", recipe.student.pretrained_dir(recipe.base_dir)))
    checks.append(("student.tokenizer.path", recipe.student.tokenizer.path))
    for field, path in checks:
        if path is not None and not recipe.resolve(path).exists():
            hint = ""
            if field == "student.pretrained":
                from avokit.catalog import TEACHERS

                hint = f" (nor a registry model: {', '.join(sorted(TEACHERS))})"
            raise RecipeError(f"{source}: {field}: file not found: {recipe.resolve(path)}{hint}")


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML error: what went wrong and where (PyYAML's own text spans lines)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def load_recipe(spec: str | Path, check_paths: bool = True) -> Recipe:
    """Load a recipe from a YAML file, or a built-in recipe by name (e.g. ``avocado-smol``)."""
    spec_str = str(spec)
    if spec_str in BUILTIN_RECIPES:
        ref = resources.files("avokit.recipes").joinpath(f"{spec_str}.yaml")
        text = ref.read_text(encoding="utf-8")
        return recipe_from_dict(yaml.safe_load(text), Path.cwd(), spec_str, check_paths)
    path = Path(spec_str)
    if not path.is_file():
        raise RecipeError(
            f"{spec_str}: recipe file not found (built-in recipes: {', '.join(BUILTIN_RECIPES)})"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    return recipe_from_dict(data, path.resolve().parent, str(path), check_paths)
