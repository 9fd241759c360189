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
    return {
        "token_id": "uint32",
        "byte_end": "uint16 token byte length, cumulative sum",
        "gold_logprob": "float32",
        "boundary_logmass": "float32",
        "topk_ids": f"{spec.id_bytes} uint8 byte planes",
        "topk_logprobs": f"uint{spec.logprob_bits} steps below the float32 top-1 (float32 step per "
        f"position), delta-coded along ranks, {spec.q_bytes} uint8 byte plane(s)",
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
