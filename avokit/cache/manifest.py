"""The per-teacher cache manifest and the per-shard progress records that make capture
resumable: a shard counts as finished only when its progress record, holding its sha256,
exists and the file still matches it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from avokit.cache.format import CacheSpec
from avokit.checksums import file_sha256
from avokit.errors import CacheError

MANIFEST_NAME = "manifest.json"
PROGRESS_DIR = "progress"
TOKENIZER_DIR = "tokenizer"


class ShardInfo(BaseModel):
    """One finished shard file."""

    file: str
    split: str
    sha256: str
    n_docs: int
    n_tokens: int
    n_bytes: int  # file size
    doc_ids: list[str]
    doc_tokens: list[int]  # positions of each document
    batch_docs: list[int]  # documents in each record batch, in order


class CacheManifest(CacheSpec):
    """``cache/<teacher>/manifest.json``: the spec, every shard with its checksum, totals."""

    plan_hash: str  # hash of (corpus, capture settings, teacher config): decides what to capture
    dtype: dict[str, str]
    max_logprob_error: float
    tokenizer_dir: str | None
    shards: list[ShardInfo]
    n_docs: int
    n_tokens: int
    total_bytes: int
    bytes_per_token: float


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and rename, so readers never see a partial file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def progress_path(cache_dir: Path, shard_file: str) -> Path:
    """Where the progress record of ``shard_file`` lives."""
    return cache_dir / PROGRESS_DIR / f"{shard_file}.json"


def record_progress(cache_dir: Path, info: ShardInfo) -> None:
    """Mark a shard finished (after its file was renamed into place)."""
    path = progress_path(cache_dir, info.file)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, info.model_dump(mode="json"))


def finished_shard(cache_dir: Path, shard_file: str) -> ShardInfo | None:
    """The shard's progress record if the shard is complete and its file matches; else None."""
    record = progress_path(cache_dir, shard_file)
    data = cache_dir / shard_file
    if not record.is_file() or not data.is_file():
        return None
    try:
        info = ShardInfo.model_validate_json(record.read_text(encoding="utf-8"))
    except ValidationError:
        return None
    if info.n_bytes != data.stat().st_size or file_sha256(data) != info.sha256:
        return None
    return info


def read_manifest(cache_dir: Path) -> CacheManifest:
    """Load and validate ``manifest.json``; :class:`CacheError` names the file on failure."""
    path = cache_dir / MANIFEST_NAME
    if not path.is_file():
        raise CacheError(f"{path}: no cache manifest (capture not finished? run `avokit capture`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CacheError(f"{path}: not valid JSON: {err.msg}") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != CacheSpec.model_fields["format_version"].default:
        raise CacheError(
            f"{path}: cache format version {version!r}, this avokit reads version "
            f"{CacheSpec.model_fields['format_version'].default}; capture again"
        )
    try:
        return CacheManifest.model_validate(raw)
    except ValidationError as err:
        raise CacheError(f"{path}: invalid manifest: {err.errors()[0]['msg']} at {err.errors()[0]['loc']}") from None
