"""`avokit train RECIPE [--baseline] [--nproc N]`: thin wrapper over :func:`avokit.train.run_training`.

``--nproc N`` starts N processes in one process group (torchrun: gloo on CPUs, NCCL on GPUs,
:mod:`avokit.train.launch`). On GPUs it also runs under ``accelerate launch --config_file
configs/accelerate/{ddp_gpu,fsdp,deepspeed}.yaml -m avokit train RECIPE``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def train_command(
    recipe: str = typer.Argument(..., help="recipe YAML file or built-in recipe name"),
    baseline: bool = typer.Option(False, "--baseline", help="CE-only baseline (same data, steps, seed)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar (logs only)"),
    nproc: int | None = typer.Option(
        None, "--nproc", help="train on N local processes in one process group (torchrun; "
        "gloo on CPUs, one process per GPU with NCCL)"),
) -> Path | None:
    """Train the student (or the baseline) of RECIPE; resumes from the newest checkpoint."""
    if nproc is not None:
        from avokit.train.launch import launch_training

        launch_training(nproc, [recipe, *(["--baseline"] if baseline else []),
                                *(["--no-progress"] if no_progress else [])])
        return None
    from accelerate import PartialState

    from avokit.recipe import load_recipe
    from avokit.train import run_training

    out = run_training(load_recipe(recipe), baseline=baseline, progress=not no_progress)
    state = PartialState()
    if state.is_main_process:
        Console().print(f"[green]trained[/green] {out}")
    # every rank leaves the group before the interpreter tears down the backend's threads
    state.destroy_process_group()
    return out


def register(app: typer.Typer) -> None:
    """Add `train` to the avokit CLI."""
    app.command("train")(train_command)
