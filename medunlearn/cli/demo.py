"""`medunlearn demo`: the whole workflow on the built-in SYNTHETIC cohort, in a few minutes on a laptop CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli.app import app, console, guarded
from medunlearn.cli.options import Overwrite, Seed
from medunlearn.errors import ConfigError


@app.command("demo")
@guarded
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for every demo output.")] = Path("demo_out"),
    patients: Annotated[int, typer.Option("--patients", min=6, max=100_000, help="Synthetic patients to generate.")] = 120,
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=10_000, help="Training epochs for the base and retrain models.")] = 15,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 when a device run misses its acceptance criteria.")] = False,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Start from this deployed MONAI bundle (with its datalist.json) instead of training a base; needs --archive.")] = None,
    archive: Annotated[Path | None, typer.Option("--archive", help="The DICOM archive (with labels.csv) the --bundle was trained on.")] = None,
    monai: Annotated[bool, typer.Option("--monai/--no-monai", help="With --bundle: run the exported bundle under MONAI and compare its predictions.")] = True,
    compare: Annotated[bool, typer.Option("--compare", help="With --bundle: also run PSG on the device policy (slow on a DenseNet; shows criterion (b) rejecting confident wrong answers).")] = False,
) -> None:
    """Forget device ScannerX with PSG and FAMR, add a site policy, merge, and report, on SYNTHETIC data.

    Without --bundle it synthesises a cohort and trains the deployed model and a retrain itself. With --bundle
    (what `make demo` runs) it adopts a bundle trained outside medunlearn, and at the end hands the merged model
    back as that bundle (export-bundle --like) and runs it under MONAI. Each run's verdict is printed; with
    --strict the command exits 3 when the PSG or FAMR device run does not meet its acceptance criteria.

    Example: [bold]medunlearn demo --bundle demo_site/bundle --archive demo_site/archive --out demo_out[/]
    """
    if (bundle is None) != (archive is None):
        raise ConfigError("Expected --bundle and --archive together (the archive the bundle was trained on), but got one.")
    if bundle is not None and archive is not None:
        from medunlearn.workflow.demo_bundle import run_bundle_demo

        result = run_bundle_demo(bundle, archive, out, seed=seed, overwrite=overwrite, echo=console.print,
                                 progress=True, run_monai=monai, compare=compare)
    else:
        from medunlearn.workflow.demo import run_demo

        result = run_demo(out, patients=patients, seed=seed, epochs=epochs, overwrite=overwrite, echo=console.print,
                          progress=True)
    missed = [m for m, metrics in result["results"].items() if not metrics.get("acceptance", {}).get("met")]
    if missed:
        console.print(f"[bold red]Acceptance criteria NOT met[/] by {', '.join(missed)} on the device policy "
                      "(see their trace.csv under runs/).")
        if strict:
            raise typer.Exit(3)
