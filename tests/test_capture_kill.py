"""`avokit capture` killed with SIGKILL mid-run resumes to a cache byte-identical to an
uninterrupted capture (real processes, real kill -9; tiny random Llama teacher)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from test_capture import make_recipe, teacher_dir, tree  # noqa: F401  (teacher_dir: fixture)

N_DOCS = 48
WORDS = ("river stone light window paper garden music letter silver morning forest engine "
         "shadow bridge candle winter harbor market feather castle copper meadow signal "
         "thunder lantern orchard velvet canyon puzzle mirror compass").split()


def write_corpus(path: Path) -> None:
    """``N_DOCS`` distinct random-word documents (no near duplicates), 60..190 characters."""
    rng = np.random.default_rng(7)
    lines = []
    for i in range(N_DOCS):
        words = [str(rng.choice(WORDS)) for _ in range(int(rng.integers(10, 24)))]
        text = f"Note {i}: " + " ".join(words) + "."
        lines.append(json.dumps({"text": text[:190]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _launch(recipe_file: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "avokit", "capture", str(recipe_file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _recipe_file(root: Path, teacher: Path, corpus: Path) -> tuple[Path, Path]:
    recipe = make_recipe(root, teacher, corpus, docs_per_shard=1)
    path = root / "recipe.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")), encoding="utf-8")
    return path, recipe.run_dir / "cache" / "tiny"


def test_kill_9_then_resume_is_byte_identical(
    tmp_path: Path, teacher_dir: Path  # noqa: F811
) -> None:
    corpus = tmp_path / "docs.jsonl"
    write_corpus(corpus)
    killed_file, cache = _recipe_file(tmp_path / "killed", teacher_dir, corpus)
    proc = _launch(killed_file)
    deadline = time.time() + 900  # generous: the shared CI machines can be very loaded
    while time.time() < deadline and proc.poll() is None:
        if len(list((cache / "progress").glob("*.arrow.json"))) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "capture finished (or failed) before it could be killed: " + \
        proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cache / "manifest.json").exists(), "killed after the last shard"
    done = len(list((cache / "progress").glob("*.arrow.json")))
    assert 2 <= done < N_DOCS
    # what a kill between writing a progress record and renaming it leaves behind
    (cache / "progress" / "train-00000.arrow.json.tmp999999999").write_text("{")

    resumed = _launch(killed_file)
    assert resumed.wait(timeout=900) == 0, resumed.stderr.read().decode()[-2000:]
    straight_file, straight_cache = _recipe_file(tmp_path / "straight", teacher_dir, corpus)
    straight = _launch(straight_file)
    assert straight.wait(timeout=900) == 0, straight.stderr.read().decode()[-2000:]
    got, want = tree(cache), tree(straight_cache)
    assert sorted(got) == sorted(want)
    assert got == want
    assert json.loads(want["manifest.json"])["n_docs"] == N_DOCS
