"""The student: architecture and size from a config, or a pretrained model; its tokenizer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from avokit.recipe.base import Section


class StudentTokenizerConfig(Section):
    """``auto``: the pretrained student's own tokenizer when ``student.pretrained`` is set, else
    ``train``; ``train``: a byte-level BPE trained on the corpus; ``path``: one loaded from disk."""

    kind: Literal["auto", "train", "path"] = "auto"
    vocab_size: int = Field(default=4096, ge=300)
    path: Path | None = None

    @model_validator(mode="after")
    def _path_needed(self) -> StudentTokenizerConfig:
        if self.kind == "path" and self.path is None:
            raise ValueError("a `path` tokenizer needs `path`")
        return self


class StudentConfig(Section):
    """Student architecture (Llama- or Qwen3-style) from the fields below, or a pretrained model.

    ``pretrained``: a registry model name (``avokit teachers list``, e.g. ``smollm2-135m``),
    resolved offline like a registry teacher, or a Hugging Face model directory (relative to the
    recipe's folder; write ``./NAME`` for a folder that is spelt like a registry name). A
    pretrained student brings its own architecture (the size fields are not used) and, by
    default, its own tokenizer and chat template.
    """

    arch: Literal["llama", "qwen3"] = "llama"
    pretrained: str | None = Field(default=None, min_length=1)
    hidden_size: int = Field(default=256, ge=8)
    intermediate_size: int = Field(default=768, ge=8)
    num_layers: int = Field(default=4, ge=1)
    num_heads: int = Field(default=4, ge=1)
    num_kv_heads: int = Field(default=4, ge=1)
    max_position_embeddings: int = Field(default=512, ge=16)
    tie_embeddings: bool = True
    tokenizer: StudentTokenizerConfig = StudentTokenizerConfig()

    @field_validator("pretrained", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        # callers hand in Path objects; the field keeps text so `./NAME` stays a directory
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _consistent(self) -> StudentConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be divisible by num_kv_heads")
        if self.pretrained is not None and self.tokenizer.kind == "train":
            raise ValueError("tokenizer.kind: `train` builds a new vocabulary, which the embeddings of "
                             f"student.pretrained ({self.pretrained}) do not know; leave student.tokenizer "
                             "out (the pretrained student's own tokenizer is used) or give kind: path")
        return self

    @property
    def tokenizer_kind(self) -> Literal["train", "path", "pretrained"]:
        """Where the student's tokenizer comes from, ``auto`` resolved."""
        if self.tokenizer.kind != "auto":
            return self.tokenizer.kind
        return "pretrained" if self.pretrained is not None else "train"

    @property
    def registry_name(self) -> str | None:
        """``pretrained`` when it names a registry model, else None (a directory or no start)."""
        from avokit.catalog import TEACHERS

        return self.pretrained if self.pretrained in TEACHERS else None

    def pretrained_dir(self, base_dir: Path) -> Path | None:
        """The pretrained directory, resolved against ``base_dir`` (None for a registry name)."""
        if self.pretrained is None or self.registry_name is not None:
            return None
        path = Path(self.pretrained).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()
