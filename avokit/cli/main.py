"""Entry point of the `avokit` command. Each command module registers itself on ``app``;
domain errors print as one clear message (exit 2), never as a traceback."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from avokit.errors import AvokitError

app = typer.Typer(
    name="avokit",
    help="Distill several teachers with different tokenizers into one student, "
    "evaluate it honestly, and serve it as a metered closed API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Each module defines `register(app)`; listed in pipeline order for `avokit --help`.
COMMAND_MODULES: list[str] = [
    "avokit.cli.teachers",
    "avokit.cli.corpus",
    "avokit.cli.generate",
    "avokit.cli.capture",
    "avokit.cli.align",
    "avokit.cli.train",
    "avokit.cli.distill",
    "avokit.cli.evaluate",
    "avokit.cli.gateway",
    "avokit.cli.gateway_alerts",
]


def build_app() -> typer.Typer:
    """Register every command module on the typer app (idempotent)."""
    if not getattr(app, "_avokit_registered", False):
        for name in COMMAND_MODULES:
            importlib.import_module(name).register(app)
        app._avokit_registered = True  # type: ignore[attr-defined]
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; AvokitError becomes a one-line red message and exit code 2."""
    cli = build_app()
    try:
        cli(args=argv, standalone_mode=False)
    except AvokitError as err:
        # soft_wrap: a long message stays one line (rich would break it at the terminal width)
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {err}", markup=True,
                                                   highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        Console(stderr=True).print("[yellow]aborted[/yellow]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if isinstance(exc, _usage_errors()):  # a bad flag or value: click's message, no trace
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise


def _usage_errors() -> tuple[type[Exception], ...]:
    """click's usage errors, and those of the copy of click that newer typer releases carry
    (they share no base class with click's own)."""
    import click

    own = getattr(typer, "TyperException", None)
    return (click.ClickException,) + ((own,) if own is not None else ())
