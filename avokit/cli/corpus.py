"""``avokit corpus RECIPE``: a thin view over :func:`avokit.corpus.build_corpus`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the corpus stack (pyarrow) is imported when the command runs, not by `avokit serve`
    from avokit.corpus import CorpusManifest


def run_corpus(recipe: str) -> CorpusManifest:
    """Build the corpus of ``recipe`` and print what was read, removed and kept."""
    from avokit.corpus import build_corpus, corpus_dir
    from avokit.recipe import load_recipe

    rec = load_recipe(recipe)
    manifest = build_corpus(rec)
    table = Table(title=f"corpus of {rec.name}: {corpus_dir(rec)}")
    for col in ("source", "texts read", "documents"):
        table.add_column(col)
    for s in manifest.sources:
        table.add_row(s.label, str(s.texts), str(s.documents))
    console = Console()
    console.print(table)
    console.print(
        f"removed {manifest.exact_duplicates} exact and {manifest.near_duplicates} near duplicates; "
        f"train {manifest.documents['train']} docs ({manifest.bytes['train']:,} bytes), "
        f"held-out {manifest.documents['heldout']} docs ({manifest.bytes['heldout']:,} bytes)"
    )
    return manifest


def corpus_command(
    recipe: str = typer.Argument(..., help="recipe YAML file or built-in recipe name"),
) -> None:
    """Build the corpus (dedup, train / held-out split) under runs/NAME/corpus/."""
    run_corpus(recipe)


def register(app: typer.Typer) -> None:
    """Add ``avokit corpus``."""
    app.command("corpus")(corpus_command)
