"""Fingerprints of what a student was trained on, for metrics.json and the release manifest:
the corpus manifest and each teacher's cache manifest (each lists its files' sha256, so one
digest of it stands for the whole artifact); and what each teacher contributed per domain
(the training's fusion weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from avokit.checksums import file_sha256
from avokit.errors import AvokitError


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


def catalog_lineage(registry_name: str | None) -> dict[str, str]:
    """What avokit's catalog records of a registry model, as lineage fields (``license``,
    ``upstream``, ``provenance``); ``{}`` for a model that is not in the registry."""
    from avokit.catalog import TEACHERS

    entry = TEACHERS.get(registry_name) if registry_name else None
    if entry is None:
        return {}
    return {"license": entry.license, "upstream": entry.upstream, "provenance": entry.provenance}


def fusion_by_domain(fusion_log: Path, domains: dict[str, str]
                     ) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """What each teacher contributed per domain: ``(teacher -> domain -> mean weight, domain ->
    documents)`` over the documents of a training's ``fusion_weights.jsonl`` (first line: the
    fusion settings; then one line per document with its teacher weights).

    A document's domain is the one its line records, else ``domains[doc_id]`` (the train
    split; logs from before the field); a document with neither is left out. Every document
    counts once, whatever its length, as in the training log's mean teacher weights.
    Missing log: ``({}, {})`` (a baseline-only run, or a run trained before the log existed).
    """
    if not fusion_log.is_file():
        return {}, {}
    sums: dict[str, dict[str, float]] = {}
    docs: dict[str, int] = {}
    for number, line in enumerate(fusion_log.read_text(encoding="utf-8").splitlines()[1:], start=2):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise AvokitError(f"{fusion_log}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("weights"), dict):
            raise AvokitError(f"{fusion_log}:{number}: no 'weights' object (not a fusion weights log)")
        domain = row.get("domain") or domains.get(row.get("doc_id", ""))
        if domain is None:
            continue
        docs[domain] = docs.get(domain, 0) + 1
        for teacher, weight in row["weights"].items():
            per = sums.setdefault(teacher, {})
            per[domain] = per.get(domain, 0.0) + float(weight)
    means = {t: {d: per[d] / docs[d] for d in sorted(per)} for t, per in sums.items()}
    return means, dict(sorted(docs.items()))
