"""Valid stage files for tests that need one without running a stage: a metrics.json a
release can be made from, and a release.json for a model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avokit.contracts import EvalMetrics, ReleaseManifest
from avokit.contracts.release import (
    EvalSummary,
    Lineage,
    TokenizerInfo,
    combined_weights_sha256,
    digest_files,
)


def gate(passed: bool) -> dict[str, Any]:
    """A one-check gate verdict."""
    return {"passed": passed, "checks": [{
        "name": "must_beat_baseline", "value": 2.0 if not passed else 1.8, "threshold": 1.9,
        "passed": passed, "message": "student BPB 2.0000 >= baseline BPB 1.9000" if not passed
        else "student BPB 1.8000 < baseline BPB 1.9000"}]}


def metrics(passed: bool, student_sha256: str | None = None) -> dict[str, Any]:
    """A metrics.json body that validates as :class:`EvalMetrics`."""
    score = {"value": 0.5, "ci95": [0.2, 0.8], "n": 4}
    bpb = {"bpb": 2.0, "nll_nats": 1.0, "bytes": 100, "tokens": 40, "docs": 2, "source": "live",
           "domains": {"english": {"bpb": 2.0, "bytes": 100, "docs": 2}}, "domain_mean": 2.0}
    body = {
        "schema_version": 1, "recipe": "r", "created": "2026-01-01T00:00:00+00:00", "eval_run": 1,
        "hardware": {"cpu": "x", "cores": 2, "ram_gib": 1.0, "accelerator": "none (CPU)"},
        "wall_time_s": 1.0, "cost_per_hour": 0.0, "cost_usd": 0.0,
        "heldout": {"docs": 2, "bytes": 100, "domains": {"english": 2}},
        "bpb": {"student": bpb, "baseline": bpb},
        "tasks": {"student": {"toy": {"acc": score, "clean": {"acc": score}, "dirty": {}}}},
        "task_subset": {"toy": {"items": 4, "available": 4, "num_fewshot": 0, "selection": "all"}},
        "contamination": {"n": 13, "min_span": 0, "dirty_fraction": 0.8, "corpus_docs": 3,
                          "overall_rate": 0.0, "per_task": {}, "per_domain": {}, "items": []},
        "gate": gate(passed), "student_sha256": student_sha256, "release_license": "apache-2.0",
        "training": {}, "models": {}, "student_config": {"tokenizer": {"kind": "train"}},
        "teachers": [{"name": "t", "kind": "hf", "license": "Apache-2.0", "fingerprint": "f" * 64}],
        "data": {"corpus": "c" * 64, "caches": {"t": "d" * 64}},
    }
    EvalMetrics.model_validate(body)  # the fixture itself must honour the contract
    return body


def write_release_manifest(model_dir: Path, name: str, context_length: int,
                           passed: bool = True) -> ReleaseManifest:
    """release.json for the files already in ``model_dir`` (as `avokit release` writes it)."""
    names = sorted(f.name for f in model_dir.iterdir() if f.is_file() and f.name != "release.json")
    weights = digest_files(model_dir, [n for n in names if n.endswith(".safetensors")])
    m = EvalMetrics.model_validate(metrics(passed, combined_weights_sha256(weights)))
    manifest = ReleaseManifest(
        name=name, created="2026-01-01T00:00:00+00:00", avokit_version="test",
        context_length=context_length, license="apache-2.0", weights=weights,
        weights_sha256=combined_weights_sha256(weights),
        files=digest_files(model_dir, [n for n in names if n not in weights]),
        tokenizer=TokenizerInfo(kind="train", vocab_size=None,
                                files=[n for n in names if n.startswith("tokenizer")]),
        lineage=Lineage(recipe="r", eval_run=1, teachers=m.teachers, data=m.data),
        gate=m.gate,
        eval=EvalSummary(bpb={"student": 2.0}, domain_bpb={}, tasks={}, contamination_rate=0.0),
    )
    manifest.write(model_dir)
    return manifest
