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
    like: Annotated[Path | None, typer.Option("--like", help="The bundle the base was adopted from: write its own tree and container with the new weights.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Write a MONAI bundle that MONAI runs without medunlearn (TorchScript models/model.ts + configs/inference.json).

    configs/metadata.json carries MONAI's schema fields, a changelog version per unlearning policy and each
    policy's acceptance verdict; models/model.pt holds the same weights as a plain state dict.

    Example: [bold]medunlearn export-bundle merged/ bundle/[/], then in bundle/:
    [bold]python -m monai.bundle run --config_file configs/inference.json --dataset_dir /path/to/images[/]
    """
    from medunlearn.attest import check_export
    from medunlearn.models.bundle import export_bundle as run_export

    check_export(checkpoint, out)  # issue 29: output apart from the input; the signed verdict matches the weights
    if like is not None:
        from medunlearn.models.bundle_like import export_like

        path = export_like(checkpoint, out, like, overwrite=overwrite)
        console.print(f"[green]Wrote[/] {path}: {like.name}'s bundle with the unlearned weights in its own container")
        return
    path = run_export(checkpoint, out, overwrite=overwrite)
    console.print(f"[green]Wrote[/] MONAI bundle {path}")
    console.print(f"Run it with MONAI: cd {path} && python -m monai.bundle run --config_file configs/inference.json "
                  "--dataset_dir <images>")
