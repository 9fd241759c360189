"""Byte-level alignment across tokenizers: pure functions, no model needed."""

from avokit.align.boundaries import Alignment, align
from avokit.align.bytes import TokenBytes, byteify
from avokit.align.offsets import offsets_from_ids, tokenize_batch_with_offsets, tokenize_with_offsets

__all__ = [
    "Alignment",
    "TokenBytes",
    "align",
    "byteify",
    "offsets_from_ids",
    "tokenize_batch_with_offsets",
    "tokenize_with_offsets",
]
