"""``avokit eval RECIPE`` and ``avokit release RUN_DIR --name NAME``: thin views over
:func:`avokit.evaluate.run_eval` and :func:`avokit.evaluate.release`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from avokit.errors import AvokitError


def eval_command(recipe: str = typer.Argument(..., help="recipe YAML file or built-in recipe name")) -> Path:
    """Evaluate student, baseline and teachers; write the report and the gate verdict."""
    from avokit.evaluate import run_eval
    from avokit.recipe.load import load_recipe

    report = run_eval(load_recipe(recipe))
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    console = Console()
    for m, b in metrics["bpb"].items():
        console.print(f"{m:>16}: held-out BPB {b['bpb']:.4f}")
    gate = metrics["gate"]
    console.print(f"gate: [{'green' if gate['passed'] else 'red'}]{'PASSED' if gate['passed'] else 'FAILED'}[/]")
    for c in gate["checks"]:
        if not c["passed"]:
            console.print(f"  failed {c['name']}: {c['message']}")
    console.print(f"report: {report / 'report.md'}")
    return report


def release_command(
    run_dir: Path = typer.Argument(..., help="the run directory, e.g. runs/avocado-mini"),
    name: str = typer.Option(..., "--name", help="model name in the registry"),
    registry: Path = typer.Option(Path("registry"), "--registry", help="model registry directory"),
) -> Path:
    """Copy a student that passed its gate into the registry with a model card."""
    from avokit.evaluate import release

    if not run_dir.is_dir():
        raise AvokitError(f"RUN_DIR {run_dir}: no such run directory")
    dest = release(run_dir, name, registry)
    Console().print(f"released {name} -> {dest}")
    return dest


def register(app: typer.Typer) -> None:
    """Add ``eval`` and ``release`` to the avokit CLI."""
    app.command("eval")(eval_command)
    app.command("release")(release_command)
