"""`avokit generate RECIPE`: thin wrapper over :func:`avokit.generate.run_generate`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

# typer keeps a docstring's line breaks: the help is written as paragraphs joined here
HELP = "\n\n".join([
    "Teachers write training text (sequence-level distillation) from the recipe's `generate`"
    " section.",
    "Prompts are prefixes of training documents (`kind: corpus`, continued by each teacher) or a"
    ' JSONL file of `{"id", "prompt", "domain"}` lines (`kind: jsonl`; `chat: true` applies each'
    " teacher's own chat template). Sampling (`temperature`, `top_p`, `max_new_tokens`,"
    " `samples_per_prompt`) and `seed` come from the recipe; each (teacher, prompt) has its own"
    " seed, so a resumed run writes the same text.",
    "Output: runs/NAME/generated/<teacher>.jsonl (every sample with its prompt, teacher, licence,"
    " fingerprint, seed and sampling settings) and documents.parquet: canary-free, deduplicated"
    " against the whole corpus and each other, added to the training split that capture and"
    " training read (the eval stage's contamination check covers it like any training text)."
    " Resumable after a kill.",
])


def generate_command(
    recipe: str = typer.Argument(..., help="recipe YAML file or built-in recipe name"),
) -> Path:
    """Teachers write training text (sequence-level distillation); the help is :data:`HELP`."""
    from avokit.generate import GeneratedManifest, run_generate
    from avokit.recipe import load_recipe

    out = run_generate(load_recipe(recipe))
    manifest = GeneratedManifest.model_validate_json((out / "manifest.json").read_text())
    table = Table(title=f"generated documents ({out})")
    for col in ("teacher", "prompts", "samples", "too short", "duplicates", "kept"):
        table.add_column(col)
    for name, t in manifest.teachers.items():
        table.add_row(name, *(str(v) for v in (t.prompts, t.samples, t.too_short, t.duplicates, t.kept)))
    Console().print(table)
    return out


def register(app: typer.Typer) -> None:
    """Add `generate` to the avokit CLI."""
    app.command("generate", help=HELP)(generate_command)
