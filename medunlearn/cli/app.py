"""The typer application object and the error guard every command uses."""
from __future__ import annotations

import functools
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape

from medunlearn.errors import MedUnlearnError

app = typer.Typer(
    name="medunlearn",
    help="Machine unlearning for deployed medical-imaging classifiers: index an archive, select a forget set, "
         "unlearn, prove it, merge, report.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # tracebacks must never print patient data
    rich_markup_mode="rich",
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a MedUnlearnError into one red line and exit code 2 (no traceback, no locals)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MedUnlearnError as exc:
            err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper
