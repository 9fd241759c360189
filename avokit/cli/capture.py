"""``avokit capture RECIPE [--teacher NAME] [--shard i/n]``: a thin view over
:func:`avokit.capture.run_capture`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def capture_command(
    recipe: str = typer.Argument(..., help="recipe YAML file or built-in recipe name"),
    teacher: str | None = typer.Option(None, "--teacher", help="capture only this teacher"),
    shard: str | None = typer.Option(
        None, "--shard", help="i/n: this machine captures shards i, i+n, ... of n machines"
    ),
) -> list[Path]:
    """Run the teachers over the corpus into runs/NAME/cache/<teacher>/ (resumable)."""
    # here, not at the top: `avokit serve` on a [serve]-only install imports this module
    from avokit.cache.manifest import MANIFEST_NAME, read_manifest
    from avokit.capture import cache_dir_for, parse_shard, run_capture
    from avokit.recipe import load_recipe

    rec = load_recipe(recipe)
    console = Console(stderr=True)
    paths = run_capture(rec, teacher=teacher, shard=parse_shard(shard) if shard else None,
                        console=console)
    table = Table(title=f"teacher caches of {rec.name}")
    for col in ("teacher", "docs", "tokens", "bytes/token", "status"):
        table.add_column(col)
    for t in rec.teachers:
        if teacher is not None and t.name != teacher:
            continue
        cache = cache_dir_for(rec, t.name)
        if (cache / MANIFEST_NAME).is_file():
            m = read_manifest(cache)
            table.add_row(t.name, str(m.n_docs), f"{m.n_tokens:,}", f"{m.bytes_per_token:.1f}", "complete")
        else:
            table.add_row(t.name, "", "", "", "waiting for other shards")
    Console().print(table)
    return paths


def register(app: typer.Typer) -> None:
    """Add ``avokit capture``."""
    app.command("capture")(capture_command)
