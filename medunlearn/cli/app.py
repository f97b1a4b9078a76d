"""The typer application object and the error guard every command uses."""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import typer

try:  # typer >= 0.20 vendors click; older versions depend on it
    from typer._click.exceptions import ClickException
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover
    # typer < 0.20; mypy checks against the installed (vendoring) typer, where click may be absent
    from click import ClickException, get_current_context  # type: ignore[import-not-found, no-redef, unused-ignore]
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
DEBUG_ENV = "MEDUNLEARN_DEBUG"


class _ConsoleNotes(logging.Handler):
    """Library warnings (logger "medunlearn") become yellow console lines, never tracebacks."""

    def emit(self, record: logging.LogRecord) -> None:
        colour = "yellow" if record.levelno >= logging.WARNING else "cyan"
        label = "Warning" if record.levelno >= logging.WARNING else "Note"
        err_console.print(f"[{colour}]{label}:[/] {escape(record.getMessage())}", soft_wrap=True)


def _install_console_notes() -> None:
    logger = logging.getLogger("medunlearn")
    if not any(isinstance(h, _ConsoleNotes) for h in logger.handlers):
        logger.addHandler(_ConsoleNotes())
    logger.setLevel(logging.INFO)
    logger.propagate = False


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="On an unexpected error, show the full traceback "
                                     "instead of one line and a log file.")) -> None:
    """Machine unlearning for deployed medical-imaging classifiers."""
    _install_console_notes()


def _debug() -> bool:
    """--debug on the command line (read from the root click context) or $MEDUNLEARN_DEBUG."""
    ctx = get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("debug"):
        return True
    return os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input (MedUnlearnError, OSError) -> one red line, exit 2. Any other exception (a bug) -> one red
    line naming a private crash log with the traceback, exit 1; `--debug` re-raises it instead."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from medunlearn.crashlog import describe_os_error, write_crash_log

        _install_console_notes()
        try:
            return fn(*args, **kwargs)
        except MedUnlearnError as exc:
            err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, ClickException, KeyboardInterrupt):
            raise
        except OSError as exc:  # a path the user gave cannot be read or written: input, not a bug
            if _debug():
                raise
            err_console.print(f"[bold red]Error:[/] {escape(describe_os_error(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback by default
            if _debug():
                raise
            log = write_crash_log(exc, fn.__name__)
            where = f"; details in {log}" if log else ""
            err_console.print(f"[bold red]Error:[/] unexpected internal error ({type(exc).__name__}){where}. "
                              "Rerun with --debug to see the traceback.", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
