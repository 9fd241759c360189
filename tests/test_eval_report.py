"""End to end: run_eval on a tiny recipe (tiny random student, baseline and teacher), the
report with plots, the append-only log, the gate verdict, then release through the CLI."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from avokit.corpus import AVOKIT_CANARY, build_corpus
from avokit.recipe.load import recipe_from_dict

WORDS = ("river stone garden lamp window copper forest silver bridge candle harbor meadow "
         "engine pocket ladder violin thunder pepper marble saddle cotton falcon mirror orchard").split()


def _corpus(path: Path, n: int = 30) -> None:
    rng = random.Random(0)
    lines = [json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(60)) + "."}) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n")


def _task(tmp: Path) -> Path:
    rows = [{"id": f"t{i}", "q": f"Which of the following words names item number {i} in the little test",
             "choices": ["lamp", "river", "copper"], "answer": i % 3} for i in range(8)]
    (tmp / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "toy.yaml").write_text(json.dumps({"name": "toy", "data": "toy.jsonl", "prompt": "Q: {q}\nA:"}))
    return tmp / "toy.yaml"


def _train_log(path: Path, start: float, timed: bool = False) -> None:
    path.write_text("".join(json.dumps({"step": s, "loss": start / (1 + s / 10), "lr": 1e-3, "tokens": 512 * s,
                                        "ce": start / (1 + s / 10) - (0.3 if timed else 0.0),
                                        **({"elapsed_s": 1.5 * s} if timed else {}),
                                        # the process group every line of today's loop records
                                        **({"world_size": 2, "distributed_type": "MULTI_CPU", "backend": "gloo",
                                            "rows_per_rank": 4, "params": 10, "params_by_rank": [10, 10]}
                                           if timed else {}),
                                        **({"heldout_bpb": start / (1 + s / 12)} if s % 5 == 0 else {})}) + "\n"
                            for s in range(1, 21)))


@pytest.fixture()
def recipe_dir(tmp_path: Path, tiny_model_factory: Callable[..., Path], smollm2_tokenizer: Any) -> Path:
    _corpus(tmp_path / "docs.jsonl")
    _task(tmp_path)
    teacher_dir = tiny_model_factory(smollm2_tokenizer, "llama", seed=0)
    recipe = {
        "name": "tiny", "runs_dir": "runs",
        "corpus": {"sources": [{"kind": "jsonl", "path": "docs.jsonl"}], "heldout_fraction": 0.2, "min_chars": 50},
        "teachers": [{"name": "tiny-teacher", "kind": "hf", "path": str(teacher_dir), "device": "cpu"}],
        "eval": {"tasks": ["toy.yaml"], "max_items": 6, "batch_size": 4, "max_length": 128},
        "gate": {"max_bpb": 1000.0, "max_contamination": 0.5, "must_beat_baseline": False},
    }
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    r = recipe_from_dict(recipe, tmp_path)
    build_corpus(r)
    for m, seed, start in (("student", 1, 6.0), ("baseline", 2, 7.0)):
        shutil.copytree(tiny_model_factory(smollm2_tokenizer, "llama", seed=seed), r.run_dir / m)
        _train_log(r.run_dir / m / "train_log.jsonl", start, timed=m == "student")
    return tmp_path


def test_eval_report_gate_log_and_release(recipe_dir: Path) -> None:
    from avokit.cli.evaluate import eval_command, release_command
    from avokit.evaluate import release, run_eval
    from avokit.evaluate.release import ReleaseError
    from avokit.recipe.load import load_recipe

    recipe_file = recipe_dir / "recipe.yaml"
    run_dir = recipe_dir / "runs" / "tiny"
    registry = recipe_dir / "registry"

    # Evaluation 1: thresholds no random model meets -> the gate fails and blocks release.
    strict = load_recipe(recipe_file)
    strict.gate.max_bpb = 0.01
    strict.gate.min_task_accuracy = {"toy": 1.0, "absent_task": 0.1}
    strict.eval.teacher_bpb = "live"
    report = run_eval(strict)
    m1 = json.loads((report / "metrics.json").read_text())
    gate1 = m1["gate"]
    assert m1["bpb"]["tiny-teacher"]["source"] == "live"
    assert set(m1["tasks"]["tiny-teacher"]) == {"toy"}  # teachers are task-scored by default
    assert gate1["passed"] is False
    with pytest.raises(ReleaseError, match=r"max_bpb \(student held-out BPB .* > max_bpb 0.01\)") as err:
        release(run_dir, "tiny-bad", registry)
    assert "min_task_accuracy.absent_task (min_task_accuracy.absent_task: task 'absent_task' was not evaluated)" in str(err.value)
    assert not (registry / "tiny-bad").exists()
    items = [json.loads(x) for x in (report / "eval_items.jsonl").read_text().splitlines()]
    assert len(items) == 6 and all(i["canary"] == AVOKIT_CANARY for i in items)

    # Teacher-generated text quoting one eval item: must be found and that item scored apart.
    leaked = items[0]["prompt"] + items[0]["choices"][items[0]["gold"]]
    pq.write_table(pa.table({"doc_id": ["gen-0"], "text": [f"A teacher wrote: {leaked} indeed."],
                             "source": ["generate"]}), run_dir / "corpus" / "generated.parquet")

    # The teacher's capture cache now covers the held-out split: BPB is read from it, same number.
    from avokit.capture import run_capture

    run_capture(load_recipe(recipe_file), teacher="tiny-teacher")

    # A cache whose held-out text is not today's (same doc id, other bytes) is refused, not used.
    from avokit.corpus import load_split
    from avokit.errors import AvokitError
    from avokit.evaluate.models import cached_bpb
    from avokit.teachers.load import load_teacher

    rec = load_recipe(recipe_file)
    texts = {d.doc_id: d.text for d in load_split(rec, "heldout")}
    first = next(iter(texts))
    teacher = load_teacher(rec.teachers[0], rec.base_dir)
    assert cached_bpb(rec, teacher, texts) is not None
    texts[first] = texts[first][::-1]  # same length, other text
    with pytest.raises(AvokitError, match=f"held-out document '{first}' do not match"):
        cached_bpb(rec, teacher, texts)
    teacher.close()

    # Evaluation 2 through the CLI function, with the teacher, the recipe's own (passing) gate.
    report = eval_command(str(recipe_file))
    m = json.loads((report / "metrics.json").read_text())
    assert set(m["bpb"]) == {"student", "baseline", "tiny-teacher"}
    assert m["bpb"]["student"]["bytes"] == m["bpb"]["tiny-teacher"]["bytes"] == m["heldout"]["bytes"] > 0
    assert m["bpb"]["student"]["bpb"] != m["bpb"]["baseline"]["bpb"]
    assert m["bpb"]["tiny-teacher"]["source"] == "cache"
    assert m["bpb"]["tiny-teacher"]["bpb"] == pytest.approx(m1["bpb"]["tiny-teacher"]["bpb"], rel=1e-5)
    assert m["bpb"]["student"]["bpb"] == m1["bpb"]["student"]["bpb"]  # same model scored twice
    assert m["task_subset"]["toy"] == {"items": 6, "available": 8, "num_fewshot": 0,
                                       "selection": "first by sha256(item id)"}
    assert [i["item_id"] for i in m["contamination"]["items"]] == [items[0]["id"]]
    toy = m["tasks"]["student"]["toy"]
    assert toy["dirty"]["acc"]["n"] == 1 and toy["clean"]["acc"]["n"] == 5 and toy["acc"]["n"] == 6
    assert m["eval_run"] == 2 and m["cost_usd"] == 0.0 and m["gate"]["passed"] is True
    # append-only log: both evaluations are there, the failed one included
    log = [json.loads(x) for x in (report / "eval_log.jsonl").read_text().splitlines()]
    assert [(e["run"], e["gate_passed"]) for e in log] == [(1, False), (2, True)]
    md = (report / "report.md").read_text()
    assert "not scored on tasks" not in md
    assert m["distillation"]["fusion_mode"] == "bpb_softmax" and m["distillation"]["targets"] == "boundary"
    assert "- fusion of the teachers: `bpb_softmax` (temperature 0.1); mean teacher weight" in md
    assert "Release gate: PASSED" in md and "| 1 |" in md and "| failed |" in md and items[0]["id"] in md
    for png in ("training_curves.png", "bpb.png", "task_accuracy.png"):
        assert (report / png).stat().st_size > 10_000
    assert "| student | " in md and "| 128 | live |" in md  # the scoring window is stated
    assert "training wall time 30.0 s" in md and "baseline: 20 logged steps" in md
    assert m["training"]["student"]["wall_time_s"] == 30.0 and m["training"]["baseline"]["wall_time_s"] is None
    # the process group each model trained on, from its log (None where an old log lacks it)
    assert {k: m["training"]["student"][k] for k in ("world_size", "distributed_type", "backend", "rows_per_rank",
                                                     "params_by_rank")} == \
        {"world_size": 2, "distributed_type": "MULTI_CPU", "backend": "gloo", "rows_per_rank": 4,
         "params_by_rank": [10, 10]}
    assert m["training"]["baseline"]["world_size"] is None and m["training"]["baseline"]["distributed_type"] is None
    assert "on 2 processes (MULTI_CPU, gloo; 4 rows of each global batch per process)" in md

    # weights changed after the evaluation: the verdict no longer applies to them
    weights = run_dir / "student" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original + b" ")
    with pytest.raises(ReleaseError, match="not the ones evaluated"):
        release(run_dir, "tiny-1", registry)
    weights.write_bytes(original)

    dest = release_command(run_dir, name="tiny-1", registry=registry)
    meta = json.loads((dest / "release.json").read_text())
    assert meta["gate"]["passed"] is True and meta["name"] == "tiny-1" and meta["context_length"] == 256
    lineage = meta["lineage"]
    assert [(t["name"], t["license"]) for t in lineage["teachers"]] == [("tiny-teacher", m["teachers"][0]["license"])]
    assert lineage["teachers"][0]["fingerprint"] and lineage["data"] == m["data"] and m["data"]["corpus"]
    assert meta["schema_version"] == 1 and set(meta["weights"]) == {"model.safetensors"}
    assert "tokenizer.json" in meta["tokenizer"]["files"] and "config.json" in meta["files"]
    assert (dest / "model.safetensors").is_file() and not (dest / "train_log.jsonl").exists()
    card = (dest / "MODEL_CARD.md").read_text()
    assert "tiny-teacher" in card and "Contamination" in card and "PASSED" in card
    assert "this student: apache-2.0" in card and meta["weights_sha256"] == m["student_sha256"]
    with pytest.raises(ReleaseError, match="already exists"):
        release(run_dir, "tiny-1", registry)

    # Teachers on BPB only: the report says which models were not task-scored, nothing else moves.
    rec = load_recipe(recipe_file)
    rec.eval.teacher_tasks = False
    m3 = json.loads((run_eval(rec) / "metrics.json").read_text())
    assert m3["tasks"]["tiny-teacher"] == {} and set(m3["tasks"]["student"]) == {"toy"}
    assert m3["bpb"]["tiny-teacher"]["bpb"] == m["bpb"]["tiny-teacher"]["bpb"]
    assert "- not scored on tasks (`eval.teacher_tasks: false`, BPB only): tiny-teacher" in (
        report / "report.md").read_text()


@pytest.mark.parametrize(("mode", "expected"), [
    ("fixed", "- fusion of the teachers: `fixed` (each teacher's recipe weight, renormalised);"),
    ("span_softmax", "- fusion of the teachers: `span_softmax` (temperature 0.1, window 2 spans);"),
])
def test_distillation_section_names_the_fusion_mode(mode: str, expected: str) -> None:
    from avokit.evaluate.report import _distillation_section

    d = {"fusion_mode": mode, "fusion_temperature": 0.1, "fusion_window": 2, "teacher_weights": {"a": 0.5, "b": 0.5},
         "targets": "dense", "chunk_debias": True, "ce_weight": 1.0, "kd_weight": 1.0, "chunk_weight": 0.5}
    lines = _distillation_section({"distillation": d})
    assert any(line.startswith(expected) for line in lines), lines
    assert not any("per domain" in line for line in lines)  # not recorded: no line
    d["domain_teacher_weights"] = {"a": {"code": 0.25, "english": 0.5}, "b": {"code": 0.75, "english": 0.5}}
    lines = _distillation_section({"distillation": d})
    assert "- mean teacher weight per domain: code: a 0.250, b 0.750; english: a 0.500, b 0.500" in lines
    assert any("x chunk (debiased)" in line and "`dense`" in line for line in lines)
