"""Fingerprints of what a student was trained on, for metrics.json and the release manifest:
the corpus manifest and each teacher's cache manifest (each lists its files' sha256, so one
digest of it stands for the whole artifact)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from avokit.checksums import file_sha256


def data_lineage(run_dir: Path, teachers: list[str]) -> dict[str, Any]:
    """``{"corpus": sha256 | None, "caches": {teacher: sha256}}`` of the manifests under
    ``run_dir``; a teacher without a finished cache (e.g. not captured) is left out."""
    corpus = run_dir / "corpus" / "manifest.json"
    caches = {t: file_sha256(run_dir / "cache" / t / "manifest.json") for t in teachers
              if (run_dir / "cache" / t / "manifest.json").is_file()}
    return {"corpus": file_sha256(corpus) if corpus.is_file() else None, "caches": caches}


def _cache_manifest(run_dir: Path, teacher: str) -> dict[str, Any]:
    path = run_dir / "cache" / teacher / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def cached_teacher_fingerprint(run_dir: Path, teacher: str) -> str | None:
    """The teacher fingerprint its capture cache was made with, or None without a cache."""
    value = _cache_manifest(run_dir, teacher).get("teacher_fingerprint")
    return str(value) if value else None


def cached_teacher_dtype(run_dir: Path, teacher: str) -> str | None:
    """The dtype the teacher computed in for its capture cache (caches from before the field
    were float32), or None without a cache."""
    manifest = _cache_manifest(run_dir, teacher)
    return str(manifest.get("compute_dtype", "float32")) if manifest else None
