"""Byteification: every token id of a Hugging Face tokenizer -> its exact bytes.

Never compare token strings after ``decode()``: decoding merges, strips and normalises.
Instead each vocabulary entry is turned into the bytes it stands for:

- GPT-2 style byte-level BPE (also tiktoken-derived tokenizers, which transformers converts
  to byte-level BPE): every character is one byte through the byte-to-unicode table.
- SentencePiece style (``▁`` is a space, ``<0xNN>`` byte-fallback pieces are that byte).
- Added and special tokens: the UTF-8 bytes of their content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

SPIECE_SPACE = "\u2581"


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable stand-in character -> byte value."""
    visible = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    chars = visible[:]
    extra = 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(visible, chars)}


@dataclass(frozen=True)
class TokenBytes:
    """The byte string of every token id of one tokenizer.

    ``table[i]`` is the exact bytes of id ``i``; ``special`` marks added/special tokens;
    ``fallback`` marks SentencePiece byte-fallback pieces (``<0xNN>``). Where two ids stand
    for the same bytes, ``preferred`` maps bytes -> the id to use (a regular token over its
    byte-fallback twin) and ``twins`` lists every id sharing those bytes.
    """

    name: str
    family: str  # "byte_level" | "sentencepiece" | "plain"
    table: list[bytes]
    special: np.ndarray  # bool [V]
    fallback: np.ndarray  # bool [V]
    twins: dict[bytes, list[int]] = field(repr=False)
    preferred: dict[bytes, int] = field(repr=False)
    dummy_prefix: bool = False  # the tokenizer prepends "▁" to the first word

    @property
    def size(self) -> int:
        """Number of ids covered (tokenizer length, including added tokens)."""
        return len(self.table)

    def lengths(self) -> np.ndarray:
        """Byte length of every id: int64 [V] (computed once, then cached)."""
        return self._lengths

    @cached_property
    def _lengths(self) -> np.ndarray:
        # cached_property writes the instance __dict__ directly, so it works on a frozen class.
        return np.fromiter((len(b) for b in self.table), dtype=np.int64, count=len(self.table))

    def byte_coverage(self) -> np.ndarray:
        """bool [256]: which single bytes have a (non-special) token of their own.

        A byte-level BPE without one of them silently drops that byte (SmolLM2's GGUF vocab
        lacks 21, e.g. 0xF1/0xF2, the lead bytes of U+40000..U+BFFFF); such text cannot
        round-trip and :func:`~avokit.align.offsets.offsets_from_ids` reports it.
        """
        have = np.zeros(256, dtype=bool)
        for b in self.preferred:
            if len(b) == 1:
                have[b[0]] = True
        return have


def _walk_types(node: Any) -> list[dict[str, Any]]:
    """Every component dict in a (possibly nested Sequence) tokenizer JSON node."""
    if node is None:
        return []
    if isinstance(node, dict):
        out = [node]
        for key in ("decoders", "pretokenizers", "normalizers", "processors"):
            for child in node.get(key, []) or []:
                out.extend(_walk_types(child))
        return out
    return []


def _detect_family(spec: dict[str, Any]) -> tuple[str, bool]:
    parts = (
        _walk_types(spec.get("pre_tokenizer"))
        + _walk_types(spec.get("decoder"))
        + _walk_types(spec.get("normalizer"))
    )
    types = {p.get("type") for p in parts}
    if "ByteLevel" in types:
        return "byte_level", False
    uses_spiece = "Metaspace" in types or any(
        p.get("type") in ("Replace", "Prepend")
        and SPIECE_SPACE in json.dumps(p, ensure_ascii=False)
        for p in parts
    )
    if uses_spiece:
        dummy = any(
            (p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never"
             and p.get("add_prefix_space", True))
            or p.get("type") == "Prepend"
            for p in _walk_types(spec.get("pre_tokenizer")) + _walk_types(spec.get("normalizer"))
        )
        return "sentencepiece", dummy
    return "plain", False


@lru_cache(maxsize=1)
def _byte_level_translation() -> dict[int, int]:
    """``str.translate`` table: GPT-2 stand-in character -> the latin-1 character of its byte."""
    return {ord(c): b for c, b in byte_decoder().items()}


def _piece_bytes(piece: str, family: str) -> tuple[bytes, bool]:
    """Bytes of one regular vocabulary piece, and whether it is a byte-fallback piece."""
    if family == "byte_level":
        try:
            # translate + latin-1 runs in C: ~10x faster than a per-character generator
            return piece.translate(_byte_level_translation()).encode("latin-1"), False
        except UnicodeEncodeError:  # a piece outside the byte alphabet: take it literally
            return piece.encode("utf-8"), False
    if family == "sentencepiece":
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            try:
                return bytes([int(piece[3:5], 16)]), True
            except ValueError:
                pass
        return piece.replace(SPIECE_SPACE, " ").encode("utf-8"), False
    return piece.encode("utf-8"), False


def _component_spec(backend: Any) -> dict[str, Any]:
    """normalizer / pre_tokenizer / decoder JSON without serialising the whole vocabulary.

    ``to_str()`` of a 262k SentencePiece tokenizer is 12 MB (vocab and merges); the three
    components alone are a few hundred bytes.
    """
    spec: dict[str, Any] = {}
    for key in ("normalizer", "pre_tokenizer", "decoder"):
        comp = getattr(backend, key, None)
        spec[key] = json.loads(comp.__getstate__()) if comp is not None else None
    return spec


def byteify(tokenizer: Any, name: str | None = None) -> TokenBytes:
    """Build the id -> bytes table of a Hugging Face (fast) tokenizer.

    Args:
        tokenizer: a ``transformers`` tokenizer with a ``backend_tokenizer`` (tokenizers lib),
            or a bare ``tokenizers.Tokenizer``.
        name: label used in error messages and reports.

    Returns:
        The table; ids the tokenizer skips (holes in a padded vocabulary) have empty bytes.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    family, dummy = _detect_family(_component_spec(backend))
    vocab: dict[str, int] = backend.get_vocab(with_added_tokens=False)
    added = backend.get_added_tokens_decoder()  # id -> AddedToken
    size = max(max(vocab.values(), default=-1), max(added, default=-1)) + 1
    table: list[bytes] = [b""] * size
    special = np.zeros(size, dtype=bool)
    fallback = np.zeros(size, dtype=bool)
    for piece, idx in vocab.items():
        table[idx], fallback[idx] = _piece_bytes(piece, family)
    for idx, tok in added.items():
        content = tok.content
        if tok.normalized and family == "sentencepiece":
            # matched against normalised text, where a space is spelled "▁"
            content = content.replace(SPIECE_SPACE, " ")
        table[idx] = content.encode("utf-8")
        special[idx] = bool(tok.special)
        fallback[idx] = False
    twins: dict[bytes, list[int]] = {}
    for idx, b in enumerate(table):
        if b and not special[idx]:
            twins.setdefault(b, []).append(idx)
    preferred: dict[bytes, int] = {}
    for b, ids in twins.items():
        # A regular piece beats its byte-fallback twin; among equals the lowest id wins.
        preferred[b] = ids[0] if len(ids) == 1 else min(ids, key=lambda i: (bool(fallback[i]), i))
    twins = {b: ids for b, ids in twins.items() if len(ids) > 1}
    label = name or getattr(tokenizer, "name_or_path", None) or "tokenizer"
    return TokenBytes(
        name=str(label),
        family=family,
        table=table,
        special=special,
        fallback=fallback,
        twins=twins,
        preferred=preferred,
        dummy_prefix=dummy,
    )


_UNICODE_FORMS = {"NFC", "NFD", "NFKC", "NFKD"}


def drop_unicode_normalizer(tokenizer: Any) -> str | None:
    """Remove a Unicode normalisation (NFC, NFKC, ...) from a byte-level BPE, in place.

    Qwen's tokenizer NFC-normalises its input, so on text that is not already NFC (``e`` +
    U+0301, say) its tokens spell other bytes than the document's and no byte offset is exact.
    A byte-level vocabulary spells any byte sequence, so without the normaliser it scores the
    document's own bytes, like every other model: bits per byte stay comparable. SentencePiece
    normalisers are left alone (their ``▁`` is handled by byteification). Returns the removed
    normaliser's type, or None when nothing was removed.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    spec = _component_spec(backend)
    norm = spec.get("normalizer")
    if norm is None or _detect_family(spec)[0] != "byte_level":
        return None
    parts = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    if not parts or any(p.get("type") not in _UNICODE_FORMS for p in parts):
        return None
    backend.normalizer = None
    return "+".join(p["type"] for p in parts)
