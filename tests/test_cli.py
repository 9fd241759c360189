"""The CLI entry: bad input is one clear line and exit code 2; the dry-run plan works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from avokit.cli.main import main
from avokit.pipeline import STAGES, distill, make_plan
from avokit.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "avokit", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_bad_recipe_is_one_line_exit_2(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ncorpus: {sources: [{kind: builtin, name: lambada-passages}]}\n"
                      "teachers: [{name: a, kind: onnx}]\n")
    proc = run_cli("distill", str(recipe), cwd=tmp_path)
    assert proc.returncode == 2
    assert "teachers[0].kind: must be one of" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_recipe_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["distill", str(tmp_path / "missing.yaml")])
    assert info.value.code == 2


def test_dry_run_plans_the_gpu_recipe_without_its_inputs(tmp_path: Path) -> None:
    proc = run_cli("distill", "--dry-run", str(REPO / "recipes" / "gpu-three-teachers.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for stage in ("capture:qwen3-8b", "capture:gemma-3-4b", "capture:gpt-oss-20b", "train:student",
                  "train:baseline", "eval", "release"):
        assert stage in out
    assert "H100-hours" in out and "teacher cache" in out
    assert "/models/Qwen3-8B" in out  # listed as an input missing on this machine


def test_plan_numbers_follow_the_recipe() -> None:
    recipe = load_recipe(REPO / "recipes" / "gpu-three-teachers.yaml", check_paths=False)
    plan = make_plan(recipe)
    train = next(s for s in plan.stages if s.stage == "train:student")
    tr = recipe.train
    assert train.tokens == tr.steps * tr.batch_size * tr.grad_accum * tr.seq_len
    assert train.flops == pytest.approx(3 * plan.student.forward_flops_per_token * train.tokens)
    assert plan.student.forward_flops_per_token > 2 * plan.student_params  # attention counted too
    assert 3e8 < plan.student_params < 7e8  # the "~0.5B student" of the recipe
    qwen = next(s for s in plan.stages if s.stage == "capture:qwen3-8b")
    assert qwen.flops == pytest.approx(2 * 8190735360 * qwen.tokens)
    assert plan.gpu_hours() > 0


def test_distill_refuses_unknown_stage() -> None:
    recipe = load_recipe("avocado-mini")
    with pytest.raises(ValueError, match="unknown stage"):
        distill(recipe, stages=("corpus", "polish"))
    assert STAGES[0] == "corpus" and STAGES[-1] == "release"


def test_distill_reports_each_stage_with_its_peak_memory(tmp_path: Path) -> None:
    import json

    (tmp_path / "d.jsonl").write_text("".join(
        json.dumps({"text": f"Document {i} says something long enough to be kept as a document. " * 5}) + "\n"
        for i in range(6)))
    (tmp_path / "r.yaml").write_text("name: x\ncorpus: {sources: [{kind: jsonl, path: d.jsonl}]}\n"
                                     "teachers: [{name: smollm2-135m, kind: registry}]\n")
    (result,) = distill(load_recipe(tmp_path / "r.yaml"), stages=("corpus",))
    assert result.stage == "corpus" and result.output == tmp_path / "runs" / "x" / "corpus"
    import resource

    now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert result.peak_rss_mb is not None and 20 < result.peak_rss_mb <= now
