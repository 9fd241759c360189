"""Checkpoints: Accelerate's full state (model, optimizer, scheduler, RNG) + avokit's data cursor.

Where avokit sharded the student itself (``train.parallel: fsdp``) Accelerate saves the
scheduler and RNG, and the model and optimizer go to ``sharded/`` through
``torch.distributed.checkpoint`` (one part per rank; :mod:`avokit.train.sharding`).

A checkpoint is written into ``step-NNNNNNNN.tmp`` and renamed into place only when complete,
so a run killed mid-write (even with kill -9) resumes from the previous complete one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from avokit.train.sharding import SHARDED_DIR, load_sharded, save_sharded

CURSOR = "cursor.json"


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def latest_checkpoint(root: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint under ``root`` and its step, or None."""
    best: tuple[Path, int] | None = None
    if not root.is_dir():
        return None
    for path in root.glob("step-*"):
        if path.suffix == ".tmp" or not (path / CURSOR).is_file():
            continue
        step = int(json.loads((path / CURSOR).read_text())["step"])
        if best is None or step > best[1]:
            best = (path, step)
    return best


def save_checkpoint(accelerator: Any, root: Path, step: int, keep: int = 2,
                    sharded: tuple[Any, Any] | None = None) -> Path:
    """Save the full training state after ``step`` optimizer steps; keep the newest ``keep``.

    Every process takes part (sharded optimizers save their own shards); the main process
    writes the cursor and renames the folder. ``sharded``: the (model, optimizer) avokit
    sharded, which Accelerate does not hold; each rank writes its part of them.
    """
    final = _step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if sharded is not None:
        save_sharded(*sharded, tmp / SHARDED_DIR)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # The cursor is the data position: batches are a pure function of the step counter.
        (tmp / CURSOR).write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        done = sorted((p for p in root.glob("step-*") if p.suffix != ".tmp"), key=lambda p: p.name)
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: Path, sharded: tuple[Any, Any] | None = None) -> int:
    """Restore the training state from ``path`` (and into ``sharded``'s model and optimizer,
    each rank its part); returns the step to continue after."""
    accelerator.load_state(str(path))
    if sharded is not None:
        load_sharded(*sharded, path / SHARDED_DIR)
    return int(json.loads((path / CURSOR).read_text())["step"])
