"""`medunlearn report`: the clinical report for governance, verdict first."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from medunlearn.cli.app import app, console, guarded
from medunlearn.cli.options import Overwrite

_STYLE = {"PASS": "bold green", "FAIL": "bold red", "NOT EVALUATED": "bold yellow"}


@app.command("report")
@guarded
def report(
    run: Annotated[Path, typer.Argument(help="An unlearning run or merged checkpoint directory.")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder for report.html / .md / .json / .pdf (default: the run).")] = None,
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="Also print report.html to report.pdf with headless Chromium (skipped with a note when none is installed).")] = True,
    require_pass: Annotated[bool, typer.Option("--require-pass", help="Exit with code 3 unless the verdict is PASS (for runbooks).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Write the clinical report: the verdict (every acceptance check, PASS / FAIL), then description,
    protocol, impact assessment, plots and limitations. report.json["verdict"]["decision"] is PASS, FAIL or
    NOT EVALUATED.

    Example: [bold]medunlearn report merged/ --out report/ --require-pass[/]
    """
    from medunlearn.workflow.steps_report import report as run_report

    paths = run_report(run, out, overwrite=overwrite, pdf=pdf)
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    verdict = doc["verdict"]
    console.print(f"[{_STYLE.get(verdict['decision'], 'bold')}]{escape(verdict['summary'])}[/]", soft_wrap=True)
    if pdf and "pdf" not in paths:
        console.print(f"[yellow]No PDF:[/] {escape(str(doc['pdf'].get('skipped')))}", soft_wrap=True)
    console.print("[green]Wrote[/] " + ", ".join(str(p) for p in paths.values()))
    if require_pass and verdict["decision"] != "PASS":
        raise typer.Exit(3)
