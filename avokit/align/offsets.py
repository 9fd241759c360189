"""Tokenize a document into ids with exact UTF-8 byte end offsets."""

from __future__ import annotations

from typing import Any

import numpy as np

from avokit.align.bytes import TokenBytes
from avokit.errors import RoundTripError
from avokit.records import TokenizedDoc


def offsets_from_ids(ids: np.ndarray | list[int], text: str, tb: TokenBytes) -> TokenizedDoc:
    """Byte end offsets of ``ids`` over ``text``, checked to reproduce its exact bytes.

    The bytes of the tokens, concatenated, must equal ``text.encode('utf-8')``; a single
    dummy-prefix space (SentencePiece's ``▁`` before the first word) is tolerated and
    removed from the first token. Anything else raises :class:`RoundTripError` naming the
    first byte that differs.
    """
    ids_arr = np.asarray(ids, dtype=np.int64)
    data = text.encode("utf-8")
    if ids_arr.size and (ids_arr.min() < 0 or ids_arr.max() >= tb.size):
        raise RoundTripError(tb.name, 0, f"token id out of range for a vocabulary of {tb.size}")
    pieces = [tb.table[i] for i in ids_arr.tolist()]
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    joined = b"".join(pieces)
    if joined != data and joined[:1] == b" " and joined[1:] == data:
        lengths = lengths.copy()
        lengths[0] -= 1
        joined = joined[1:]
    if joined != data:
        pos = next(
            (i for i, (a, b) in enumerate(zip(joined, data)) if a != b),
            min(len(joined), len(data)),
        )
        got = joined[max(0, pos - 8) : pos + 8]
        want = data[max(0, pos - 8) : pos + 8]
        raise RoundTripError(tb.name, pos, f"tokens give {got!r}, text has {want!r}")
    ends = np.cumsum(lengths, dtype=np.int64)
    return TokenizedDoc(ids=ids_arr, byte_ends=ends, n_bytes=len(data))


def tokenize_with_offsets(tokenizer: Any, text: str, tb: TokenBytes) -> TokenizedDoc:
    """Encode ``text`` with no special tokens added and return ids with byte end offsets.

    Args:
        tokenizer: a ``transformers`` tokenizer or a bare ``tokenizers.Tokenizer``.
        text: the document.
        tb: the tokenizer's byte table from :func:`avokit.align.bytes.byteify`.
    """
    if hasattr(tokenizer, "backend_tokenizer") or not hasattr(tokenizer, "encode_batch"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
    return offsets_from_ids(ids, text, tb)


def tokenize_batch_with_offsets(
    tokenizer: Any, texts: list[str], tb: TokenBytes
) -> list[TokenizedDoc]:
    """Batched :func:`tokenize_with_offsets` (the Rust tokenizer encodes in parallel)."""
    if hasattr(tokenizer, "backend_tokenizer"):
        all_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    else:
        all_ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [offsets_from_ids(ids, t, tb) for ids, t in zip(all_ids, texts)]
