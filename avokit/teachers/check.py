"""What ``avokit teachers list`` and ``avokit teachers check`` compute (typed, testable)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from avokit.errors import AvokitError
from avokit.recipe.teachers import TeacherConfig
from avokit.teachers.base import Teacher
from avokit.teachers.scoring import perplexity

# A plain English paragraph (written for this check, not from any eval set).
CHECK_PARAGRAPH = (
    "The old library stood at the corner of the main street, next to the bakery. Every "
    "morning, people came in to read the newspaper, borrow books and talk with friends. The "
    "librarian knew most of them by name and often recommended novels she thought they would "
    "enjoy. In the afternoon, children arrived after school to do their homework at the long "
    "wooden tables, and the room became noisy until the evening."
)
CHECK_PROMPT = "The capital of France is"


@dataclass(frozen=True)
class TeacherRow:
    """One registry teacher as ``avokit teachers list`` shows it."""

    name: str
    family: str
    params: int
    vocab_size: int
    tokenizer_kind: str
    license: str
    installed: bool


@dataclass(frozen=True)
class CheckResult:
    """Perplexity on :data:`CHECK_PARAGRAPH` and the top next tokens after a prompt."""

    name: str
    perplexity: float
    bpb: float  # bits per UTF-8 byte of the paragraph: comparable across tokenizers
    n_tokens: int
    top_next: list[tuple[str, float]]  # (token text, probability), most likely first
    load_seconds: float
    score_seconds: float
    tokens_per_second: float


def list_registry_teachers() -> list[TeacherRow]:
    """Every registry teacher, without loading or assembling any weights."""
    from avokit.catalog import TEACHERS
    from avokit.teachers.registry import is_installed

    return [
        TeacherRow(name=e.name, family=e.family, params=e.params, vocab_size=e.vocab_size,
                   tokenizer_kind=e.tokenizer_kind, license=e.license,
                   installed=is_installed(e.name))
        for e in TEACHERS.values()
    ]


def config_for(name_or_path: str) -> TeacherConfig:
    """A teacher declaration for a registry name, an HF model directory or a GGUF file."""
    path = Path(name_or_path)
    if path.is_dir():
        return TeacherConfig(name=path.name or "teacher", kind="hf", path=path.resolve())
    if path.is_file() and path.suffix == ".gguf":
        return TeacherConfig(name=path.stem, kind="gguf", path=path.resolve())
    if path.is_file():
        raise AvokitError(f"{path} is not a .gguf file; give a registry name, a Hugging Face "
                          "model directory or a GGUF file")
    from avokit.catalog import TEACHERS, teacher_entry

    if name_or_path not in TEACHERS and ("/" in name_or_path or name_or_path.endswith(".gguf")):
        raise AvokitError(f"teacher {name_or_path}: no such file or directory")

    teacher_entry(name_or_path)  # raises with the list of names when unknown
    return TeacherConfig(name=name_or_path, kind="registry")


def next_token_topk(teacher: Teacher, prompt: str, k: int) -> list[tuple[str, float]]:
    """The teacher's ``k`` most likely next tokens after ``prompt`` with probabilities.

    Works through :meth:`Teacher.score` (any backend): it scores ``prompt + "\\n"`` and reads
    the distribution of the token that starts right after the prompt's last byte.
    """
    import numpy as np

    (rec,) = teacher.score([prompt + "\n"], ["check-prompt"], k)
    starts = np.concatenate([[0], rec.byte_ends[:-1]])
    where = np.nonzero(starts == len(prompt.encode("utf-8")))[0]
    if where.size == 0:
        raise AvokitError(f"teacher {teacher.info.name!r} merges the prompt's end with a newline")
    i = int(where[0])
    table = teacher.token_bytes.table
    return [(table[int(t)].decode("utf-8", errors="replace"), float(np.exp(lp)))
            for t, lp in zip(rec.topk_ids[i], rec.topk_logprobs[i])]


def check_teacher(teacher: Teacher, load_seconds: float = 0.0, k: int = 5) -> CheckResult:
    """Perplexity on the built-in paragraph and top-``k`` after :data:`CHECK_PROMPT`."""
    started = time.perf_counter()
    records = teacher.score([CHECK_PARAGRAPH], ["check-paragraph"], k)
    score_s = time.perf_counter() - started
    n = records[0].n_positions
    n_bytes = len(CHECK_PARAGRAPH.encode("utf-8"))
    return CheckResult(
        name=teacher.info.name, perplexity=perplexity(records),
        bpb=records[0].nll_nats() / (math.log(2.0) * n_bytes), n_tokens=n,
        top_next=next_token_topk(teacher, CHECK_PROMPT, k), load_seconds=load_seconds,
        score_seconds=score_s, tokens_per_second=n / score_s if score_s > 0 else float("inf"),
    )
