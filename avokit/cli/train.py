"""`avokit train RECIPE [--baseline]`: thin wrapper over :func:`avokit.train.run_training`.

Also runs under ``accelerate launch -m avokit train RECIPE`` (DDP, FSDP, DeepSpeed configs).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def train_command(
    recipe: str = typer.Argument(..., help="recipe YAML file or built-in recipe name"),
    baseline: bool = typer.Option(False, "--baseline", help="CE-only baseline (same data, steps, seed)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar (logs only)"),
) -> Path:
    """Train the student (or the baseline) of RECIPE; resumes from the newest checkpoint."""
    from accelerate import PartialState

    from avokit.recipe import load_recipe
    from avokit.train import run_training

    out = run_training(load_recipe(recipe), baseline=baseline, progress=not no_progress)
    if PartialState().is_main_process:
        Console().print(f"[green]trained[/green] {out}")
    return out


def register(app: typer.Typer) -> None:
    """Add `train` to the avokit CLI."""
    app.command("train")(train_command)
