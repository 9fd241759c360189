"""Where the student and the CE baseline start: the run's tokenizer and the initial weights.

Both trained models start from exactly what these return (the same tokenizer files, the same
pretrained weights or the same seeded random init), so "student vs baseline" isolates what the
teachers add.
"""

from __future__ import annotations

from typing import Any

from avokit.corpus import load_split
from avokit.errors import AvokitError
from avokit.recipe.recipe import Recipe
from avokit.student import build_student, load_student_tokenizer, train_student_tokenizer
from avokit.teachers.pretrained import PretrainedStart, check_not_a_teacher, resolve_pretrained


def pretrained_tokenizer(start: PretrainedStart) -> Any:
    """The pretrained student's own tokenizer (and chat template) from its folder; a registry
    model's BOS becomes the token its catalog entry scores plain text after (SmolLM2's GGUF
    names the chat marker ``<|im_start|>`` as BOS, its documents start after ``<|endoftext|>``),
    so the untouched model is scored here as it is scored as a teacher."""
    if not (start.folder / "tokenizer.json").is_file() and not (start.folder / "tokenizer_config.json").is_file():
        raise AvokitError(f"student.pretrained: {start.folder} has no tokenizer files; give student.tokenizer "
                          "(kind: path) with the tokenizer its embeddings were trained with")
    tok = load_student_tokenizer(start.folder)
    if start.start_token is not None and start.start_token in tok.get_vocab():
        tok.bos_token = start.start_token
    return tok


def _checked_path_tokenizer(recipe: Recipe, start: PretrainedStart | None) -> Any:
    """``student.tokenizer.path``'s tokenizer; beside a pretrained student it must be the
    student's own vocabulary (its embeddings know no other)."""
    cfg = recipe.student.tokenizer
    assert cfg.path is not None  # guaranteed by the recipe validator
    tok = load_student_tokenizer(recipe.resolve(cfg.path))
    if start is None:
        return tok
    has_own = (start.folder / "tokenizer.json").is_file() or (start.folder / "tokenizer_config.json").is_file()
    if has_own:
        own = pretrained_tokenizer(start)
        if own.get_vocab() != tok.get_vocab():
            raise AvokitError(f"student.tokenizer.path: {recipe.resolve(cfg.path)} is not the tokenizer of "
                              f"student.pretrained ({recipe.student.pretrained}): its {len(tok)} tokens differ "
                              f"from the model's {len(own)}; leave student.tokenizer out to use the model's own")
        if start.start_token is not None:
            tok.bos_token = own.bos_token
    return tok


def ensure_student_tokenizer(recipe: Recipe, start: PretrainedStart | None = None) -> Any:
    """The run's student tokenizer (``run_dir/tokenizer``), made once: the pretrained student's
    own, loaded from ``student.tokenizer.path``, or trained on the corpus.

    Shared by the student and the baseline so both see identical tokens. ``start``: the
    resolved pretrained student (resolved here when the recipe has one and it is not given).
    """
    tok_dir = recipe.run_dir / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        return load_student_tokenizer(tok_dir)
    kind = recipe.student.tokenizer_kind
    if kind == "train":
        texts = [d.text for d in load_split(recipe, "train")]
        return train_student_tokenizer(texts, recipe.student.tokenizer.vocab_size, tok_dir)
    start = start or resolve_pretrained(recipe)
    if kind == "pretrained":
        assert start is not None  # `auto` resolves to `pretrained` only beside student.pretrained
        tok = pretrained_tokenizer(start)
    else:
        tok = _checked_path_tokenizer(recipe, start)
    tok.save_pretrained(str(tok_dir))
    return tok


def initial_student(recipe: Recipe, tokenizer: Any, start: PretrainedStart | None = None) -> Any:
    """The model training starts from: the pretrained weights (refused when they are a
    teacher's), else a model built from ``student``'s size fields (seed the RNG first)."""
    start = start or resolve_pretrained(recipe)
    if start is None:
        return build_student(recipe.student, tokenizer)
    check_not_a_teacher(recipe, start)
    return build_student(recipe.student.model_copy(update={"pretrained": str(start.folder)}), tokenizer)
