"""Tokenize a document into ids with exact UTF-8 byte end offsets.

The offsets come from the tokens' own bytes (:mod:`avokit.align.bytes`), never from decoded
strings, and are checked: the tokens' bytes must concatenate to the document's exact bytes.
Two tolerated differences, both removed rather than hidden:

- a dummy-prefix space (SentencePiece ``▁`` before the first word, ``add_prefix_space``):
  dropped from the first token's length;
- special tokens a tokenizer adds at either end (BOS/EOS) that are not in the text:
  dropped from the ids, so two tokenizers that differ only in BOS/EOS align the same.

Anything else is a :class:`~avokit.errors.RoundTripError` naming the first differing byte,
unless the caller asks for ``lossy="offsets"``: then the tokenizer's own character offset
mapping assigns every token to a span of the original text (a normaliser that lowercases or
NFKC-folds still aligns at word level), with zero-width tokens where several share a span.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Literal

import numpy as np

from avokit.align.bytes import TokenBytes
from avokit.errors import RoundTripError
from avokit.records import TokenizedDoc

LossyMode = Literal["raise", "offsets"]


def first_difference(got: bytes, want: bytes) -> int:
    """Index of the first byte where ``got`` and ``want`` differ (or the shorter length)."""
    n = min(len(got), len(want))
    if got[:n] == want[:n]:
        return n
    lo, hi = 0, n  # binary search on equal prefixes: O(log n) C-speed compares
    while lo < hi:
        mid = (lo + hi) // 2
        if got[: mid + 1] == want[: mid + 1]:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _gather(tb: TokenBytes, ids: list[int]) -> list[bytes]:
    if not ids:
        return []
    got = itemgetter(*ids)(tb.table)
    return [got] if len(ids) == 1 else list(got)


def _strip_edge_specials(ids: np.ndarray, pieces: list[bytes], tb: TokenBytes, data: bytes
                         ) -> tuple[np.ndarray, list[bytes]]:
    """Drop special tokens at the start/end whose bytes are not the text's own bytes there."""
    lo, hi = 0, len(pieces)
    pos = 0
    while lo < hi and tb.special[ids[lo]] and not data.startswith(pieces[lo], pos):
        lo += 1
    end = len(data)
    while hi > lo and tb.special[ids[hi - 1]] and not data.endswith(pieces[hi - 1], 0, end):
        hi -= 1
    return ids[lo:hi], pieces[lo:hi]


def offsets_from_ids(ids: np.ndarray | list[int], text: str, tb: TokenBytes) -> TokenizedDoc:
    """Byte end offsets of ``ids`` over ``text``, checked to reproduce its exact bytes.

    Leading/trailing special tokens absent from the text (BOS/EOS) are dropped from the
    returned ids; a single dummy-prefix space is removed from the first token.

    Raises:
        RoundTripError: the tokens' bytes differ from the text; ``.position`` is the first
            differing byte of the text.
    """
    ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    data = text.encode("utf-8")
    if ids_arr.size and (ids_arr.min() < 0 or ids_arr.max() >= tb.size):
        raise RoundTripError(tb.name, 0, f"token id out of range for a vocabulary of {tb.size}")
    pieces = _gather(tb, ids_arr.tolist())
    ids_arr, pieces = _strip_edge_specials(ids_arr, pieces, tb, data)
    lengths = tb.lengths()[ids_arr]
    joined = b"".join(pieces)
    if joined != data and joined[:1] == b" " and joined[1:] == data:
        lengths = lengths.copy()
        lengths[0] -= 1
        if lengths[0] == 0:  # the prefix space was a token of its own
            ids_arr, lengths = ids_arr[1:], lengths[1:]
        joined = joined[1:]
    if joined != data:
        pos = first_difference(joined, data)
        got = joined[max(0, pos - 8) : pos + 8]
        want = data[max(0, pos - 8) : pos + 8]
        raise RoundTripError(tb.name, pos, f"tokens give {got!r}, text has {want!r}")
    ends = np.cumsum(lengths, dtype=np.int64)
    return TokenizedDoc(ids=ids_arr, byte_ends=ends, n_bytes=len(data))


def _char_to_byte(text: str) -> np.ndarray:
    """int64 [len(text)+1]: UTF-8 byte offset of every character index."""
    widths = np.fromiter(
        (1 if c < "\x80" else 2 if c < "\u0800" else 3 if c < "\U00010000" else 4 for c in text),
        dtype=np.int64,
        count=len(text),
    )
    return np.concatenate([[0], np.cumsum(widths)])


def offsets_from_mapping(
    ids: list[int], char_offsets: list[tuple[int, int]], text: str, tb: TokenBytes
) -> TokenizedDoc:
    """Fallback offsets for lossy normalisers: ends from the tokenizer's character spans.

    Ends are made non-decreasing and the last one is the document's length; tokens that share
    a span get zero width (they never start a common boundary). Special tokens with an empty
    span (added BOS/EOS) are dropped.
    """
    c2b = _char_to_byte(text)
    keep = [k for k, (s, e) in enumerate(char_offsets) if not (tb.special[ids[k]] and s == e)]
    ids_arr = np.asarray([ids[k] for k in keep], dtype=np.int64)
    char_ends = np.asarray([char_offsets[k][1] for k in keep], dtype=np.int64)
    ends = np.maximum.accumulate(c2b[np.clip(char_ends, 0, len(text))]) if keep else char_ends
    if ends.size:
        ends[-1] = c2b[-1]
    return TokenizedDoc(ids=ids_arr, byte_ends=ends.astype(np.int64), n_bytes=int(c2b[-1]))


def _is_backend(tokenizer: Any) -> bool:
    """True for a bare ``tokenizers.Tokenizer`` (no transformers wrapper)."""
    return not hasattr(tokenizer, "backend_tokenizer") and hasattr(tokenizer, "encode_batch")


def _encode_batch(tokenizer: Any, texts: list[str], with_offsets: bool) -> list[Any]:
    """Encodings (``ids``, ``offsets``) from the Rust tokenizer, encoded in parallel."""
    backend = tokenizer if _is_backend(tokenizer) else tokenizer.backend_tokenizer
    encodings: list[Any] = backend.encode_batch_fast(texts, add_special_tokens=False) if (
        not with_offsets and hasattr(backend, "encode_batch_fast")
    ) else backend.encode_batch(texts, add_special_tokens=False)
    return encodings


def tokenize_batch_with_offsets(
    tokenizer: Any,
    texts: list[str],
    tb: TokenBytes,
    lossy: LossyMode = "raise",
    issues: list[tuple[int, RoundTripError]] | None = None,
) -> list[TokenizedDoc]:
    """Encode ``texts`` with no special tokens added; ids with exact byte end offsets each.

    Args:
        tokenizer: a ``transformers`` fast tokenizer or a bare ``tokenizers.Tokenizer``.
        texts: the documents.
        tb: the tokenizer's byte table from :func:`avokit.align.bytes.byteify`.
        lossy: ``"raise"`` (default) raises :class:`RoundTripError` on the first document the
            tokenizer cannot reproduce; ``"offsets"`` aligns such documents through the
            tokenizer's character offsets instead (see :func:`offsets_from_mapping`).
        issues: if given, every round-trip failure is appended as (document index, error),
            so a caller in ``"offsets"`` mode can report what it aligned approximately.
    """
    encodings = _encode_batch(tokenizer, texts, with_offsets=False)
    out: list[TokenizedDoc] = []
    for enc, text in zip(encodings, texts):
        try:
            out.append(offsets_from_ids(enc.ids, text, tb))
        except RoundTripError as err:
            if lossy != "offsets":
                raise
            if issues is not None:
                issues.append((len(out), err))
            (full,) = _encode_batch(tokenizer, [text], with_offsets=True)
            out.append(offsets_from_mapping(full.ids, full.offsets, text, tb))
    return out


def tokenize_with_offsets(
    tokenizer: Any, text: str, tb: TokenBytes, lossy: LossyMode = "raise"
) -> TokenizedDoc:
    """Single-document :func:`tokenize_batch_with_offsets`."""
    return tokenize_batch_with_offsets(tokenizer, [text], tb, lossy=lossy)[0]
