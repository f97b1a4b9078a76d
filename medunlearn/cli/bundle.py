"""`medunlearn export-bundle`: a MONAI bundle from a checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli.app import app, console, guarded
from medunlearn.cli.options import Overwrite


@app.command("export-bundle")
@guarded
def export_bundle(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (base, unlearned or merged).")],
    out: Annotated[Path, typer.Argument(help="Bundle directory to write.")],
    overwrite: Overwrite = False,
) -> None:
    """Write a MONAI bundle (configs/metadata.json with a changelog per unlearning policy, models/model.pt).

    Example: [bold]medunlearn export-bundle merged/ bundle/[/]
    """
    from medunlearn.models.bundle import export_bundle as run_export

    path = run_export(checkpoint, out, overwrite=overwrite)
    console.print(f"[green]Wrote[/] MONAI bundle {path}")
