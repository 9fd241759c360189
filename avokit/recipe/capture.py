"""Capture stage: how teachers are run over the corpus and what is stored."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from avokit.recipe.base import Section


class CaptureConfig(Section):
    """Top-k width, batching, sharding and compression of the teacher cache.

    ``logprob_bits``: top-k log-probs are stored as 8- or 16-bit steps below the exact top-1
    (see docs/cache-format.md for the error bound). ``compression``: zstd per document batch,
    or none (then shards are read zero-copy from the memory map).
    """

    top_k: int = Field(default=32, ge=1, le=1024)
    batch_size: int = Field(default=8, ge=1)
    seq_len: int = Field(default=256, ge=8)
    vocab_chunk: int = Field(default=512, ge=1)  # positions per full-vocabulary logit chunk
    docs_per_shard: int = Field(default=256, ge=1)
    logprob_bits: Literal[8, 16] = 8
    # > 0: also store, for every proper prefix of each gold token, the teacher's exact mass on
    # the tokens that extend it and its `inside_top_k` most likely extenders (PrefixCuts), so a
    # student whose tokens end inside the teacher's gets complete targets there (Chinese under
    # a byte-level student); needs the full distribution (hf/gguf teachers, not endpoints)
    inside_top_k: int = Field(default=0, ge=0, le=256)
    compression: Literal["zstd", "none"] = "zstd"
    # Under a teacher's `dtype: auto` that resolves to bf16: score this many training documents
    # in float32 and in bf16 first and keep float32 for a teacher whose bf16 records miss the
    # fidelity limits (avokit.teachers.fidelity); 0 trusts bf16 without checking.
    bf16_check_docs: int = Field(default=4, ge=0)
