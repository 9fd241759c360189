"""``avokit eval RECIPE`` and ``avokit release RUN_DIR [--name NAME] [--registry DIR]``:
thin views over :func:`avokit.evaluate.run_eval` and :func:`avokit.evaluate.release`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from avokit.errors import AvokitError


def eval_command(recipe: str = typer.Argument(..., help="recipe YAML file or built-in recipe name")) -> Path:
    """Evaluate student, baseline and teachers; write the report and the gate verdict."""
    from avokit.contracts import read_metrics
    from avokit.evaluate import run_eval
    from avokit.recipe.load import load_recipe

    report = run_eval(load_recipe(recipe))
    metrics = read_metrics(report / "metrics.json")
    console = Console()
    for m, b in metrics.bpb.items():
        console.print(f"{m:>16}: held-out BPB {b.bpb:.4f}")
    gate = metrics.gate
    console.print(f"gate: [{'green' if gate.passed else 'red'}]{'PASSED' if gate.passed else 'FAILED'}[/]")
    for c in gate.failed():
        console.print(f"  failed {c.name}: {c.message}")
    console.print(f"report: {report / 'report.md'}")
    return report


def release_command(
    run_dir: Path = typer.Argument(..., help="the run directory, e.g. runs/avocado-smol"),
    name: str | None = typer.Option(
        None, "--name", help="model name in the registry [default: the recipe's release.name, else its name]"),
    registry: Path | None = typer.Option(
        None, "--registry", help="model registry directory [default: the recipe's release.registry]"),
) -> Path:
    """Copy a student that passed its gate into the registry with a model card."""
    from avokit.contracts import ContractError, read_metrics
    from avokit.evaluate import release

    if not run_dir.is_dir():
        raise AvokitError(f"RUN_DIR {run_dir}: no such run directory")
    if name is None or registry is None:
        # the recipe's release section as `avokit eval` recorded it (paths already resolved
        # against the recipe's folder, so the release lands where `avokit distill` puts it)
        try:
            metrics = read_metrics(run_dir / "report" / "metrics.json")
        except ContractError as err:
            raise AvokitError(f"{err} (or give --name and --registry)") from None
        name = name or metrics.release_name
        registry = registry or (Path(metrics.release_registry) if metrics.release_registry else None)
        if name is None or registry is None:
            raise AvokitError(f"{run_dir / 'report' / 'metrics.json'}: records no release name or "
                              "registry; give --name and --registry")
    dest = release(run_dir, name, registry)
    Console().print(f"released {name} -> {dest}")
    return dest


def register(app: typer.Typer) -> None:
    """Add ``eval`` and ``release`` to the avokit CLI."""
    app.command("eval")(eval_command)
    app.command("release")(release_command)
