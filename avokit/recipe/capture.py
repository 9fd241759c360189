"""Capture stage: how teachers are run over the corpus and what is stored."""

from __future__ import annotations

from pydantic import Field

from avokit.recipe.base import Section


class CaptureConfig(Section):
    """Top-k width, batching and sharding of the teacher cache."""

    top_k: int = Field(default=32, ge=1, le=1024)
    batch_size: int = Field(default=8, ge=1)
    seq_len: int = Field(default=256, ge=8)
    vocab_chunk: int = Field(default=512, ge=1)  # positions per full-vocabulary logit chunk
    docs_per_shard: int = Field(default=256, ge=1)
    logprob_bits: int = Field(default=16, ge=8, le=32)
