"""Exact and near-duplicate removal: normalised-text hashes, then MinHash over word 5-grams
with banded LSH (numpy only). The first occurrence of a document wins, so the result is
deterministic in the input order."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np

from avokit.corpus.document import Document
from avokit.corpus.words import words as _words

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class DedupStats:
    """How many documents each pass removed."""

    exact: int
    near: int


def normalise(text: str) -> str:
    """Lower-case words joined by single spaces: equal for texts that differ only in case,
    punctuation or whitespace."""
    return " ".join(_words(text))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer; uint64 arithmetic wraps modulo 2**64 as intended."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def minhash_signature(text: str, num_perm: int = 128, ngram: int = 5, seed: int = 0) -> np.ndarray:
    """MinHash signature (uint64 [num_perm]) of the set of word ``ngram``-grams of ``text``.

    Shingles are hashed with CRC-32 (deterministic across processes, unlike ``hash``); each
    permutation is a splitmix64 of the shingle hash xor a per-permutation seed.
    """
    words = _words(text)
    if len(words) < ngram:
        shingles = [" ".join(words)]
    else:
        shingles = [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    base = np.fromiter(
        (zlib.crc32(s.encode("utf-8")) for s in set(shingles)), dtype=np.uint64
    )
    seeds = _splitmix64(np.arange(num_perm, dtype=np.uint64) + np.uint64(seed * num_perm + 1))
    hashed = _splitmix64(base[None, :] ^ seeds[:, None])  # [num_perm, n_shingles]
    return hashed.min(axis=1)


def dedup(
    docs: list[Document], threshold: float = 0.8, num_perm: int = 128, bands: int = 32
) -> tuple[list[Document], DedupStats]:
    """Drop exact duplicates (same normalised text), then near duplicates.

    Near duplicates: two documents whose estimated Jaccard similarity of word 5-gram sets is
    at least ``threshold``. Candidates come from LSH (``bands`` bands of
    ``num_perm // bands`` rows); each candidate pair is confirmed on the full signature.
    """
    seen: set[bytes] = set()
    unique: list[Document] = []
    for doc in docs:
        key = hashlib.sha256(normalise(doc.text).encode("utf-8")).digest()
        if key not in seen:
            seen.add(key)
            unique.append(doc)
    exact = len(docs) - len(unique)
    rows = num_perm // bands
    buckets: dict[tuple[int, bytes], list[int]] = {}
    signatures: list[np.ndarray] = []
    kept: list[Document] = []
    for doc in unique:
        sig = minhash_signature(doc.text, num_perm=num_perm)
        keys = [(b, sig[b * rows : (b + 1) * rows].tobytes()) for b in range(bands)]
        candidates = {i for key in keys for i in buckets.get(key, ())}
        if any(float(np.mean(signatures[i] == sig)) >= threshold for i in candidates):
            continue
        idx = len(kept)
        kept.append(doc)
        signatures.append(sig)
        for band_key in keys:
            buckets.setdefault(band_key, []).append(idx)
    return kept, DedupStats(exact=exact, near=len(unique) - len(kept))
