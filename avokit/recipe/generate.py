"""The generate stage: teachers write training text (sequence-level distillation)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from avokit.recipe.base import Section


class PromptSource(Section):
    """Where prompts come from.

    ``corpus``: the first ``prefix_chars`` characters of each *training* document (cut back to
    a whitespace), continued by the teacher; held-out documents are never prompts, so no
    teacher ever writes a continuation of test text. ``jsonl``: one JSON object per line with
    ``prompt`` (text), optional ``id`` (default: the line number) and ``domain``; with
    ``chat: true`` each teacher's own chat template wraps the prompt (instruct teachers).
    """

    kind: Literal["corpus", "jsonl"]
    path: Path | None = None
    prefix_chars: int = Field(default=256, ge=1)
    max_prompts: int | None = Field(default=None, gt=0)
    chat: bool = False
    domain: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,31}$")

    @model_validator(mode="after")
    def _path_matches_kind(self) -> PromptSource:
        if self.kind == "jsonl" and self.path is None:
            raise ValueError("a jsonl prompt source needs `path`")
        if self.kind == "corpus" and self.path is not None:
            raise ValueError("a corpus prompt source reads the recipe's corpus; drop `path`")
        return self


class GenerateConfig(Section):
    """Sampling settings; every generation is seeded by (seed, teacher, prompt id)."""

    teachers: list[str] = Field(default_factory=list)  # empty: every teacher of the recipe
    prompts: list[PromptSource] = Field(min_length=1)
    samples_per_prompt: int = Field(default=1, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=1.0, ge=0.0)  # 0: greedy
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = 0
    min_chars: int = Field(default=32, ge=1)  # shorter generations are dropped (and counted)
