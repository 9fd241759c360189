"""Byte-level alignment across tokenizers: pure functions, no model needed."""

from avokit.align.boundaries import Alignment, align
from avokit.align.bytes import TokenBytes, byteify, drop_unicode_normalizer
from avokit.align.offsets import (
    offsets_from_ids,
    offsets_from_mapping,
    tokenize_batch_with_offsets,
    tokenize_with_offsets,
)
from avokit.align.vocab_map import MapCoverage, VocabMap, build_vocab_map, first_token_map

__all__ = [
    "Alignment",
    "MapCoverage",
    "TokenBytes",
    "VocabMap",
    "align",
    "build_vocab_map",
    "first_token_map",
    "byteify",
    "drop_unicode_normalizer",
    "offsets_from_ids",
    "offsets_from_mapping",
    "tokenize_batch_with_offsets",
    "tokenize_with_offsets",
]
