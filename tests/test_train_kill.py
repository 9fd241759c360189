"""A training process killed with SIGKILL resumes and ends with the uninterrupted run's weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from test_train import make_recipe, write_corpus


def _launch(recipe_file: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "avokit", "train", str(recipe_file), "--baseline",
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from avokit.student import train_student_tokenizer
    from avokit.train.data import read_split

    overrides = {"steps": 40, "checkpoint_every": 2, "log_every": 10, "eval_every": 40}
    killed = make_recipe(tmp_path / "killed", **overrides)
    write_corpus(killed.run_dir)
    train_student_tokenizer([d.text for d in read_split(killed.run_dir, "train")], 512,
                            killed.run_dir / "tokenizer")
    recipe_file = tmp_path / "killed" / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(killed.model_dump(mode="json")))
    proc = _launch(recipe_file)
    ckpts = killed.run_dir / "baseline" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(p.suffix != ".tmp" for p in ckpts.glob("step-*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished (or failed) before it could be killed: " + \
        proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed.run_dir / "baseline" / "model.safetensors").exists()
    resumed = _launch(recipe_file)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]

    straight = make_recipe(tmp_path / "straight", **overrides)
    write_corpus(straight.run_dir)
    train_student_tokenizer([d.text for d in read_split(straight.run_dir, "train")], 512,
                            straight.run_dir / "tokenizer")
    # the uninterrupted run also in a fresh process with the same thread count (OMP_NUM_THREADS=1)
    straight_file = tmp_path / "straight" / "recipe.yaml"
    straight_file.write_text(yaml.safe_dump(straight.model_dump(mode="json")))
    assert _launch(straight_file).wait(timeout=300) == 0
    a = load_file(str(killed.run_dir / "baseline" / "model.safetensors"))
    b = load_file(str(straight.run_dir / "baseline" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
