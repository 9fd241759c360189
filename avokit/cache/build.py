"""Assemble a teacher cache's manifest from its finished shards."""

from __future__ import annotations

from pathlib import Path

from avokit.cache.format import CacheSpec
from avokit.cache.manifest import (
    MANIFEST_NAME,
    TOKENIZER_DIR,
    CacheManifest,
    ShardInfo,
    write_json_atomic,
)


def column_dtypes(spec: CacheSpec) -> dict[str, str]:
    """How each field is stored (for the manifest's ``dtype`` entry and the docs)."""
    q = "uint8" if spec.logprob_bits == 8 else "uint16"
    ids = {"u16": "uint16", "u16+u8": "uint16 low + uint8 high planes", "u32": "uint32"}[spec.id_encoding]
    return {
        "token_id": "uint16" if spec.id_encoding == "u16" else "uint32",
        "byte_end": "uint16 token byte length, cumulative sum",
        "gold_logprob": "float32",
        "boundary_logmass": "float32",
        "topk_ids": ids,
        "topk_logprobs": f"{q} steps below the float32 top-1, float32 step per position",
        "compression": spec.compression,
    }


def write_manifest(
    cache_dir: Path, spec: CacheSpec, plan_hash: str, shards: list[ShardInfo]
) -> CacheManifest:
    """Write ``manifest.json`` (atomically) listing ``shards`` in plan order."""
    n_tokens = sum(s.n_tokens for s in shards)
    total = sum(s.n_bytes for s in shards)
    manifest = CacheManifest(
        **spec.model_dump(),
        plan_hash=plan_hash,
        id_encoding_name=spec.id_encoding,
        dtype=column_dtypes(spec),
        max_logprob_error=spec.max_quantisation_error(),
        tokenizer_dir=TOKENIZER_DIR if (cache_dir / TOKENIZER_DIR).is_dir() else None,
        shards=shards,
        n_docs=sum(s.n_docs for s in shards),
        n_tokens=n_tokens,
        total_bytes=total,
        bytes_per_token=round(total / n_tokens, 3) if n_tokens else 0.0,
    )
    write_json_atomic(cache_dir / MANIFEST_NAME, manifest.model_dump(mode="json"))
    return manifest
