"""Two-process DDP on CPU (gloo) through `accelerate launch` matches one process, same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_train import make_recipe, write_corpus


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    from avokit.student import train_student_tokenizer
    from avokit.train import run_training
    from avokit.train.data import read_split

    overrides = {"steps": 6, "log_every": 2, "eval_every": 6, "checkpoint_every": 100}
    single = make_recipe(tmp_path / "one", **overrides)
    write_corpus(single.run_dir)
    train_student_tokenizer([d.text for d in read_split(single.run_dir, "train")], 512,
                            single.run_dir / "tokenizer")
    one = _log(run_training(single, baseline=True, progress=False))

    ddp_dir = tmp_path / "two"
    ddp = make_recipe(ddp_dir, **overrides)
    write_corpus(ddp.run_dir)
    train_student_tokenizer([d.text for d in read_split(ddp.run_dir, "train")], 512, ddp.run_dir / "tokenizer")
    recipe_file = ddp_dir / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(ddp.model_dump(mode="json")))
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(accelerate), "launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "avokit", "train",
         str(recipe_file), "--baseline", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = _log(ddp.run_dir / "baseline")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [2, 4, 6]
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) < 2e-3 * max(1.0, abs(a["loss"])), (a, b)
        assert a["tokens"] == b["tokens"]
    assert abs(one[-1]["heldout_bpb"] - two[-1]["heldout_bpb"]) < 5e-3
