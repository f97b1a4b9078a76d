"""`medunlearn report`: the clinical report for governance."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medunlearn.cli.app import app, console, guarded
from medunlearn.cli.options import Overwrite


@app.command("report")
@guarded
def report(
    run: Annotated[Path, typer.Argument(help="An unlearning run or merged checkpoint directory.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for report.html / report.md / report.json (default: the run).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Write the clinical report (description, protocol, impact assessment, plots, limitations).

    Example: [bold]medunlearn report merged/ --out report/[/]
    """
    from medunlearn.workflow.steps_report import report as run_report

    paths = run_report(run, out, overwrite=overwrite)
    console.print("[green]Wrote[/] " + ", ".join(str(p) for p in paths.values()))
