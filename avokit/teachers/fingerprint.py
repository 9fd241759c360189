"""Cheap, stable fingerprints of teacher weights and tokenizers for cache manifests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from avokit.align.bytes import TokenBytes

# Hashing whole 20 GB checkpoints would take minutes; names, sizes and the two ends of
# every weight file change whenever the weights do in practice (headers hold tensor
# metadata, and any re-quantisation or fine-tune rewrites both ends).
EDGE_BYTES = 4 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def weight_files(path: Path) -> list[Path]:
    """The weight files of a model directory (sorted), or ``[path]`` for a single file."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def weights_fingerprint(files: list[Path]) -> str:
    """sha256 over each file's name, size, first and last 4 MiB (hex digest)."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        size = f.stat().st_size
        digest.update(f"{f.name}\0{size}\0".encode())
        with f.open("rb") as handle:
            digest.update(handle.read(EDGE_BYTES))
            if size > EDGE_BYTES:
                handle.seek(max(EDGE_BYTES, size - EDGE_BYTES))
                digest.update(handle.read(EDGE_BYTES))
    return digest.hexdigest()


def tokenizer_fingerprint(tb: TokenBytes) -> str:
    """sha256 of the id -> bytes table (length-prefixed) and the special-token flags."""
    digest = hashlib.sha256()
    for idx, piece in enumerate(tb.table):
        digest.update(len(piece).to_bytes(4, "little"))
        digest.update(piece)
        digest.update(b"\1" if tb.special[idx] else b"\0")
    return digest.hexdigest()


def endpoint_fingerprint(base_url: str, model: str, tb: TokenBytes) -> str:
    """An endpoint's weights are unknowable: fingerprint URL, model name and tokenizer."""
    key = f"{base_url.rstrip('/')}\0{model}\0{tokenizer_fingerprint(tb)}"
    return hashlib.sha256(key.encode()).hexdigest()
