"""The student: architecture and size from a config, or a pretrained directory; its tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from avokit.recipe.base import Section


class StudentTokenizerConfig(Section):
    """Train a byte-level BPE on the corpus (``train``), or load one (``path``)."""

    kind: Literal["train", "path"] = "train"
    vocab_size: int = Field(default=4096, ge=300)
    path: Path | None = None

    @model_validator(mode="after")
    def _path_needed(self) -> StudentTokenizerConfig:
        if self.kind == "path" and self.path is None:
            raise ValueError("a `path` tokenizer needs `path`")
        return self


class StudentConfig(Section):
    """Student architecture (Llama- or Qwen3-style) or a pretrained directory."""

    arch: Literal["llama", "qwen3"] = "llama"
    pretrained: Path | None = None
    hidden_size: int = Field(default=256, ge=8)
    intermediate_size: int = Field(default=768, ge=8)
    num_layers: int = Field(default=4, ge=1)
    num_heads: int = Field(default=4, ge=1)
    num_kv_heads: int = Field(default=4, ge=1)
    max_position_embeddings: int = Field(default=512, ge=16)
    tie_embeddings: bool = True
    tokenizer: StudentTokenizerConfig = StudentTokenizerConfig()

    @model_validator(mode="after")
    def _heads_divide(self) -> StudentConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be divisible by num_kv_heads")
        return self
