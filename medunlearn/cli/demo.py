"""`medunlearn demo`: the whole workflow on the built-in SYNTHETIC cohort, in a few minutes on a laptop CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli.app import app, console, guarded
from medunlearn.cli.options import Overwrite, Seed


@app.command("demo")
@guarded
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for every demo output.")] = Path("demo_out"),
    patients: Annotated[int, typer.Option("--patients", min=6, max=100_000, help="Synthetic patients to generate.")] = 120,
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=10_000, help="Training epochs for the base and retrain models.")] = 15,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 when a device run misses its acceptance criteria.")] = False,
) -> None:
    """Synthesise a cohort, forget device ScannerX with PSG and FAMR, add a site policy, merge, and report.

    Each run's verdict is printed; with --strict the command exits 3 when the PSG or FAMR device run does not
    meet its acceptance criteria (as `forget` always does).

    Example: [bold]medunlearn demo --out demo_out[/]
    """
    from medunlearn.workflow.demo import run_demo

    result = run_demo(out, patients=patients, seed=seed, epochs=epochs, overwrite=overwrite, echo=console.print,
                      progress=True)
    missed = [m for m, metrics in result["results"].items() if not metrics.get("acceptance", {}).get("met")]
    if missed:
        console.print(f"[bold red]Acceptance criteria NOT met[/] by {', '.join(missed)} on the device policy "
                      "(see their trace.csv under runs/).")
        if strict:
            raise typer.Exit(3)
