"""Two training processes in one gloo group (``avokit train --nproc 2``), checked from inside the
run: world size 2, disjoint halves of every global batch, and the same result as one process
at the same global batch. A single-process launch fails every one of these checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from test_train import make_recipe, write_corpus

from avokit.errors import AvokitError
from avokit.train.topology import LaunchRequest, Topology, check_process_group, launch_request

STEPS = {"steps": 4, "log_every": 1, "eval_every": 4, "checkpoint_every": 100}


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _prepared(root: Path) -> Any:
    """A baseline recipe over the test corpus with its student tokenizer, written as YAML."""
    from avokit.student import train_student_tokenizer
    from avokit.train.data import read_split

    recipe = make_recipe(root, **STEPS)
    write_corpus(recipe.run_dir)
    train_student_tokenizer([d.text for d in read_split(recipe.run_dir, "train")], 512,
                            recipe.run_dir / "tokenizer")
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    return recipe


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "MASTER_ADDR", "AVOKIT_NPROC")}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_two_processes_split_each_global_batch_and_match_one(tmp_path: Path) -> None:
    from avokit.evaluate.run import training_summary
    from avokit.teachers.scoring import resolve_start_token_id
    from avokit.train import run_training
    from avokit.train.data import batch_rows, pack_documents, read_split
    from avokit.train.run import ensure_student_tokenizer

    single = _prepared(tmp_path / "one")
    one = _log(run_training(single, baseline=True, progress=False))
    ddp = _prepared(tmp_path / "two")
    proc = subprocess.run(
        [sys.executable, "-m", "avokit", "train", str(tmp_path / "two" / "recipe.yaml"), "--baseline",
         "--no-progress", "--nproc", "2"],
        env=_env(), capture_output=True, text=True, timeout=420, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = _log(ddp.run_dir / "baseline")

    # the mechanism first: one gloo group of two processes, as the run itself saw it
    assert [r["world_size"] for r in two] == [2] * 4, two[0]
    assert {(r["distributed_type"], r["backend"], r["rows_per_rank"]) for r in two} == {("MULTI_CPU", "gloo", 4)}
    assert {(r["world_size"], r["distributed_type"], r["rows_per_rank"]) for r in one} == {(1, "NO", 8)}
    # each rank trained on its own half of every global batch, and together on all of it
    tok = ensure_student_tokenizer(ddp)
    n_rows = pack_documents(read_split(ddp.run_dir, "train"), tok, ddp.train.seq_len, tok.eos_token_id,
                            start_id=resolve_start_token_id(tok)).n_rows
    for r in two:
        first, second = r["rows_by_rank"]
        assert len(first) == len(second) == 4 and not set(first) & set(second), r["rows_by_rank"]
        assert first + second == batch_rows(n_rows, ddp.train.seed, r["step"] - 1, ddp.train.batch_size).tolist()
    assert [r["rows_by_rank"] for r in one] == [[a + b] for a, b in (r["rows_by_rank"] for r in two)]
    # and the same training as one process at the same global batch
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) < 2e-3 * max(1.0, abs(a["loss"])), (a, b)
        assert a["tokens"] == b["tokens"]
    assert np.isfinite(two[-1]["heldout_bpb"]) and abs(one[-1]["heldout_bpb"] - two[-1]["heldout_bpb"]) < 5e-3
    # and what `avokit eval` puts in metrics.json's `training` from these logs
    summary = training_summary(ddp.run_dir)["baseline"]
    assert (summary.world_size, summary.distributed_type, summary.backend, summary.rows_per_rank) == \
        (2, "MULTI_CPU", "gloo", 4)
    assert summary.params_by_rank == [two[0]["params"]] * 2  # DDP: every process holds all of it
    assert training_summary(single.run_dir)["baseline"].world_size == 1


def test_accelerate_cpu_launcher_that_starts_one_process_is_refused(tmp_path: Path) -> None:
    """``accelerate launch --num_processes 2 --cpu`` (no mpirun) starts ONE process: refused."""
    recipe = _prepared(tmp_path)
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run(
        [str(accelerate), "launch", "--num_processes", "2", "--cpu", "--num_machines", "1", "--mixed_precision",
         "no", "--dynamo_backend", "no", "-m", "avokit", "train", str(tmp_path / "recipe.yaml"), "--baseline",
         "--no-progress"],
        env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode != 0
    assert "asked for several processes" in proc.stderr and "has 1 (NO)" in proc.stderr, proc.stderr[-2000:]
    assert not (recipe.run_dir / "baseline" / "train_log.jsonl").exists()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"AVOKIT_NPROC": "4", "WORLD_SIZE": "2"}, LaunchRequest(4, "AVOKIT_NPROC")),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, LaunchRequest(2, "WORLD_SIZE")),
    ({"OMPI_COMM_WORLD_SIZE": "8"}, LaunchRequest(8, "OMPI_COMM_WORLD_SIZE")),
    ({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"}, LaunchRequest(None, "MASTER_ADDR")),
    ({"ACCELERATE_USE_CPU": "True"}, None),  # accelerate launch of one process
])
def test_launch_request_reads_each_launcher(env: dict[str, str], expected: LaunchRequest | None) -> None:
    got = launch_request(env)
    assert (got is None) == (expected is None)
    if got is not None and expected is not None:
        assert got.n == expected.n and got.source.startswith(expected.source)


def test_smaller_group_than_requested_is_refused() -> None:
    one = Topology(world_size=1, rank=0, distributed_type="NO", backend=None)
    two = Topology(world_size=2, rank=0, distributed_type="MULTI_CPU", backend="gloo")
    check_process_group(None, one)
    check_process_group(LaunchRequest(2, "WORLD_SIZE"), two)
    with pytest.raises(AvokitError, match=r"asked for 2 processes \(WORLD_SIZE\) but this process group has 1"):
        check_process_group(LaunchRequest(2, "WORLD_SIZE"), one)
    with pytest.raises(AvokitError, match="asked for several processes"):
        check_process_group(LaunchRequest(None, "MASTER_ADDR"), one)
    with pytest.raises(AvokitError, match="AVOKIT_NPROC='x' must be an integer"):
        launch_request({"AVOKIT_NPROC": "x"})


def test_torchrun_without_a_gpu_gets_a_cpu_group() -> None:
    """torchrun on a CPU machine: without ACCELERATE_USE_CPU each rank would form a world of one."""
    from avokit.train.topology import use_cpu_group_if_no_accelerator

    env = {"LOCAL_RANK": "0", "WORLD_SIZE": "2"}
    use_cpu_group_if_no_accelerator(env)
    assert env.get("ACCELERATE_USE_CPU") == ("true" if not torch.cuda.is_available() else None)
    single: dict[str, str] = {}
    chosen = {"LOCAL_RANK": "0", "WORLD_SIZE": "2", "ACCELERATE_USE_CPU": "false"}
    use_cpu_group_if_no_accelerator(single)
    use_cpu_group_if_no_accelerator(chosen)
    assert single == {} and chosen["ACCELERATE_USE_CPU"] == "false"  # a user's choice is kept


def test_nproc_is_the_documented_torchrun_command() -> None:
    """docs/scale-out.md: `avokit train RECIPE --nproc 2` is `torchrun --standalone --nproc-per-node 2
    -m avokit train RECIPE` with a CPU group and the cores split between the processes."""
    from avokit.train.launch import launch_command, launch_env

    assert launch_command(2, ["r.yaml", "--no-progress"]) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "avokit", "train", "r.yaml", "--no-progress"]
    env = launch_env(2, {"PATH": "/bin"}, has_cuda=False, cpu_count=8)
    assert env == {"PATH": "/bin", "AVOKIT_NPROC": "2", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "4"}
    assert "ACCELERATE_USE_CPU" not in launch_env(2, {}, has_cuda=True, cpu_count=8)
