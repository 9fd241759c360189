"""`avokit align-report TEACHER STUDENT_TOKENIZER FILE [--json]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from avokit.errors import AvokitError

if TYPE_CHECKING:  # numpy and the tokenizer stack load when the command runs, not for `avokit serve`
    from avokit.align.report import AlignReport


def run_align_report(teacher: str, student: str, file: Path) -> AlignReport:
    """Load both tokenizers offline, read the documents and build the report.

    Args:
        teacher, student: tokenizer specs for :func:`avokit.align.sources.load_tokenizer`
            (registry name, 'qwen3', 'o200k', model directory, .gguf/.json/.tiktoken/.vocab).
        file: documents (.jsonl with 'text', .parquet with column 'text', or a text file).
    """
    from avokit.align.report import align_report, read_texts
    from avokit.align.sources import load_tokenizer

    texts = read_texts(file)
    if not texts:
        raise AvokitError(f"document file {file} holds no documents")
    return align_report(load_tokenizer(teacher), load_tokenizer(student), texts, teacher, student)


def align_report_command(
    teacher: Annotated[str, typer.Argument(help="Teacher tokenizer: registry name, 'qwen3', 'o200k', dir or file.")],
    student_tokenizer: Annotated[str, typer.Argument(help="Student tokenizer: same forms as TEACHER.")],
    file: Annotated[Path, typer.Argument(help="Documents: .jsonl ('text'), .parquet ('text') or plain text.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """How a teacher's tokens align with the student's on FILE: token counts, bytes/token,
    common-boundary share, chunk lengths, vocabulary-map coverage, round-trip failures."""
    from avokit.align.report import render_markdown

    rep = run_align_report(teacher, student_tokenizer, file)
    if as_json:
        typer.echo(json.dumps(rep.as_dict(), indent=2))
    else:
        # plain echo: the Markdown table must not be re-wrapped at the terminal width
        typer.echo(render_markdown(rep), nl=False)


def register(app: typer.Typer) -> None:
    """Add `align-report` to the CLI."""
    app.command("align-report")(align_report_command)
