"""Teacher declarations: a registry name, a Hugging Face directory, a GGUF file or an endpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from avokit.recipe.base import Section


class TeacherConfig(Section):
    """One teacher.

    ``kind``: ``registry`` (a built-in name such as ``gemma3-270m``), ``hf`` (model directory),
    ``gguf`` (a GGUF file) or ``openai`` (an OpenAI-compatible endpoint with prompt log-probs).
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: Literal["registry", "hf", "gguf", "openai"]
    path: Path | None = None
    base_url: str | None = None  # for `openai`; unset: read from the variable `base_url_env`
    base_url_env: str = "OPENAI_BASE_URL"
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # the key itself never sits in a recipe
    tokenizer: Path | None = None  # tokenizer dir/file for an `openai` teacher
    # `auto`: bf16 where the device computes it natively (CUDA with bf16, a CPU with AMX or
    # AVX512-BF16; AVOKIT_CPU_BF16=0/1 overrides), else float32 (avokit.precision). Under auto,
    # capture first checks bf16 against float32 on a few documents and keeps float32 for a
    # teacher that fails (capture.bf16_check_docs).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    start_token: str | None = None
    max_length: int = Field(default=512, ge=8)
    weight: float = Field(default=1.0, ge=0.0)
    # this teacher's own weights of the token-level and chunk KD terms (None: train.loss's):
    # teachers differ in which term teaches a given student well (bench/quality ablations)
    kd_weight: float | None = Field(default=None, ge=0.0)
    chunk_weight: float | None = Field(default=None, ge=0.0)
    # Parameters active per token (for a mixture of experts, the active ones), used by
    # `avokit distill --dry-run` for FLOPs when the weights are not on this machine.
    params: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _kind_fields(self) -> TeacherConfig:
        if self.kind in ("hf", "gguf") and self.path is None:
            raise ValueError(f"a {self.kind} teacher needs `path`")
        if self.kind == "openai" and not self.model:
            raise ValueError("an openai teacher needs `model`")
        if self.kind == "openai" and self.tokenizer is None:
            raise ValueError("an openai teacher needs `tokenizer` (a local tokenizer dir or file)")
        return self

    def endpoint_url(self) -> str | None:
        """The endpoint's base URL: ``base_url`` if the recipe gives one, else the environment
        variable named by ``base_url_env`` (None when neither is set)."""
        return self.base_url or os.environ.get(self.base_url_env) or None

    @property
    def registry_name(self) -> str:
        """The registry name: ``model`` if given, else ``name``."""
        return self.model or self.name
