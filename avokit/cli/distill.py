"""`avokit distill [RECIPE] [--dry-run]`: the main job, or its plan."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from avokit.pipeline import STAGES, Plan, distill, make_plan
from avokit.recipe import load_recipe
from avokit.recipe.load import BUILTIN_RECIPES, DEFAULT_RECIPE


def _fmt_num(x: float) -> str:
    for unit, div in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def print_plan(plan: Plan, console: Console) -> None:
    """Render a dry-run plan as tables."""
    table = Table(title=f"plan for {plan.recipe}  ->  {plan.run_dir}")
    for col in ("stage", "what", "tokens", "FLOPs", "done"):
        table.add_column(col)
    for s in plan.stages:
        table.add_row(s.stage, s.what, _fmt_num(s.tokens), _fmt_num(s.flops) if s.flops else "-",
                      "yes" if s.done else "")
    console.print(table)
    console.print(f"corpus: {_fmt_num(plan.corpus_bytes)}B of text ({plan.corpus_bytes_source})")
    size = plan.student
    params = f"{_fmt_num(size.params)} parameters, " if size.params is not None else "size unknown, "
    console.print(f"student: {params}{_fmt_num(size.forward_flops_per_token)} FLOPs per token forward, "
                  f"{_fmt_num(size.train_flops_per_token)} per training token (from {size.source})")
    for name, n in plan.teacher_params.items():
        console.print(f"teacher {name}: {_fmt_num(n) + ' parameters' if n else 'size unknown (set params:)'}")
    console.print(f"teacher cache: ~{_fmt_num(plan.cache_bytes)}B")
    console.print(f"total: {_fmt_num(plan.total_flops)} FLOPs ~ {plan.gpu_hours():.3g} H100-hours "
                  "(989 TFLOP/s bf16; 40% MFU training, 30% forward)")
    if plan.missing_inputs:
        console.print("[yellow]inputs not on this machine (needed at run time):[/yellow]")
        for m in plan.missing_inputs:
            console.print(f"  {m}")


def distill_command(
    recipe: Annotated[str, typer.Argument(help=f"recipe YAML or built-in name ({', '.join(BUILTIN_RECIPES)})")] = DEFAULT_RECIPE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and exit")] = False,
    stages: Annotated[str | None, typer.Option(help=f"comma-separated subset of {','.join(STAGES)}")] = None,
    registry: Annotated[Path | None, typer.Option(help="model registry directory for release")] = None,
) -> None:
    """Run corpus -> (generate) -> capture -> train -> baseline -> eval -> release; skips done work."""
    console = Console()
    rec = load_recipe(recipe, check_paths=not dry_run)
    if dry_run:
        print_plan(make_plan(rec), console)
        return
    chosen = tuple(s.strip() for s in stages.split(",")) if stages else STAGES
    start = time.perf_counter()
    results = distill(rec, chosen, registry,
                      on_stage=lambda s: console.rule(f"[bold]{s}[/bold]"))
    table = Table(title=f"{rec.name}: done in {time.perf_counter() - start:.0f} s")
    table.add_column("stage")
    table.add_column("output")
    table.add_column("seconds", justify="right")
    table.add_column("peak RSS MB", justify="right")
    for r in results:
        table.add_row(r.stage, str(r.output), f"{r.seconds:.1f}",
                      "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}")
    console.print(table)
    report = rec.run_dir / "report" / "report.md"
    if report.is_file():
        console.print(f"report: {report}")
    reg = registry or rec.resolve(rec.release.registry)
    console.print(f"serve it: avokit serve --registry {reg}")


def register(app: typer.Typer) -> None:
    """Add `distill` to the CLI."""
    app.command("distill")(distill_command)
