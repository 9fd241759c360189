"""FSDP2 (full sharding) on 2 CPU processes with gloo, on avokit's student and training pieces.

``avokit train`` cannot run FSDP on CPUs through Accelerate 1.16 (it forms FSDP only on
accelerators) and refuses to fall back to DDP silently; this proves what torch can do here:
each rank holds half of every parameter, a sharded checkpoint resumes to the same next losses,
and the gathered student is one Hugging Face directory that matches one process's training.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_ddp import _env, _log, _prepared

from avokit.errors import AvokitError
from avokit.train.topology import Topology, check_requested_distribution

WORKER = Path(__file__).with_name("fsdp_cpu_worker.py")


def _torchrun(recipe: Path, out: Path, start: int, stop: int, save_at: int) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER),
         str(recipe), str(out), str(start), str(stop), str(save_at)],
        env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]


def test_fsdp2_on_two_cpu_processes_shards_resumes_and_matches_one_process(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from avokit.train import run_training

    recipe = _prepared(tmp_path / "fsdp")
    ranks = _torchrun(tmp_path / "fsdp" / "recipe.yaml", tmp_path / "full", 0, 4, 2)
    # the mechanism first: two gloo ranks, each holding its half of every parameter
    assert [(r["rank"], r["world"], r["backend"]) for r in ranks] == [(0, 2, "gloo"), (1, 2, "gloo")]
    assert set(ranks[0]["shards"]) == set(ranks[0]["n_params"])  # every parameter is sharded
    for name, (local, full) in ranks[0]["shards"].items():
        other = ranks[1]["shards"][name][0]
        assert local + other == full and 0 < local < full and 0 < other < full, (name, local, other, full)
    for a, b in zip(ranks[0]["losses"], ranks[1]["losses"]):
        assert a["loss"] == b["loss"] and not set(a["rows"]) & set(b["rows"])
    # a sharded checkpoint after step 2 resumes to the same losses as the uninterrupted run
    resumed = _torchrun(tmp_path / "fsdp" / "recipe.yaml", tmp_path / "full", 2, 4, 0)
    assert [x["step"] for x in resumed[0]["losses"]] == [3, 4]
    assert sorted(p.name for p in (tmp_path / "full" / "ckpt-2").iterdir() if p.suffix == ".distcp") == \
        ["__0_0.distcp", "__1_0.distcp"]  # one part per rank
    for a, b in zip(resumed[0]["losses"], ranks[0]["losses"][2:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    # the same training as one process at the same global batch, exported whole
    one = _log(run_training(recipe, baseline=True, progress=False))
    for a, b in zip(one, ranks[0]["losses"]):
        assert a["step"] == b["step"] and abs(a["loss"] - b["loss"]) < 2e-3 * max(1.0, a["loss"]), (a, b)
    fsdp_model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "full" / "model")).eval()
    ref_model = AutoModelForCausalLM.from_pretrained(str(recipe.run_dir / "baseline")).eval()
    ids = torch.arange(1, 33)[None, :]
    with torch.no_grad():
        diff = (fsdp_model(input_ids=ids).logits - ref_model(input_ids=ids).logits).abs().max()
    assert float(diff) < 5e-2, float(diff)


def test_fsdp_asked_for_but_not_formed_is_refused() -> None:
    cpu = Topology(world_size=2, rank=0, distributed_type="MULTI_CPU", backend="gloo")
    check_requested_distribution({}, cpu)
    check_requested_distribution({"ACCELERATE_USE_FSDP": "true"},
                                 Topology(world_size=2, rank=0, distributed_type="FSDP", backend="nccl"))
    with pytest.raises(AvokitError, match="FSDP .*ACCELERATE_USE_FSDP.* formed MULTI_CPU"):
        check_requested_distribution({"ACCELERATE_USE_FSDP": "true"}, cpu)
    with pytest.raises(AvokitError, match="DeepSpeed .*ACCELERATE_USE_DEEPSPEED"):
        check_requested_distribution({"ACCELERATE_USE_DEEPSPEED": "true"}, cpu)
