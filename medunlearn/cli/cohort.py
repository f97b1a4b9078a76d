"""`medunlearn cohort synth|index`: build the cohort table."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from medunlearn.cli.app import app, console, guarded
from medunlearn.cli.options import Overwrite, Seed
from medunlearn.forget.table import selection_table  # noqa: F401  (re-exported for cli.forget)

cohort_app = typer.Typer(help="Create the built-in synthetic cohort, or index a DICOM / NIfTI archive.",
                         no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")


@cohort_app.command("synth")
@guarded
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the SYNTHETIC DICOM cohort and labels.csv into.")],
    patients: Annotated[int, typer.Option("--patients", help="Number of synthetic patients.")] = 48,
    image_size: Annotated[int, typer.Option("--image-size", help="Pixel rows/columns of each image.")] = 64,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Write the built-in SYNTHETIC multi-vendor cohort as real DICOM files plus labels.csv.

    Example: [bold]medunlearn cohort synth data/synth --patients 48 --seed 0[/]
    """
    from medunlearn.data.synthetic import synthesize_cohort

    summary = synthesize_cohort(out_dir, n_patients=patients, seed=seed, image_size=image_size, overwrite=overwrite)
    console.print(f"[green]Wrote a SYNTHETIC cohort[/] to {out_dir}: {summary.get('n_images')} images of "
                  f"{summary.get('n_patients')} patients; devices: {', '.join(map(str, summary.get('devices', [])))}")


@cohort_app.command("index")
@guarded
def index(
    data_dir: Annotated[Path, typer.Argument(help="Archive folder (DICOM files of any extension, NIfTI + JSON sidecars).")],
    out: Annotated[Path, typer.Option("--out", help="Cohort table to write (CSV).")] = Path("cohort.csv"),
    labels: Annotated[Optional[Path], typer.Option("--labels", help="labels.csv joined by sop_instance_uid or relative path.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Ingest report (JSON): every skipped file with its reason.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Parallel header readers (default: CPU count).")] = None,
    salt: Annotated[Optional[str], typer.Option("--salt", envvar="MEDUNLEARN_SALT", help="Secret salt for pseudonymised ids.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Index an imaging archive into a cohort table (header-only reads, pseudonymised patient ids).

    Example: [bold]medunlearn cohort index data/synth --labels data/synth/labels.csv --out cohort.csv --report ingest.json[/]
    """
    from medunlearn.data.cohort import index_archive, write_cohort
    from medunlearn.errors import OutputExistsError
    from medunlearn.fileio import write_json

    for path in (out, report):
        if path is not None and path.exists() and not overwrite:
            raise OutputExistsError(f"Output {path} already exists; pass --overwrite to replace it.")
    df, ingest = index_archive(data_dir, labels_csv=labels, salt=salt, workers=workers, progress=True)
    write_cohort(df, out)
    if report is not None:
        write_json(report, ingest)
    vendors = ", ".join(f"{k or '(blank)'}: {v}" for k, v in sorted(ingest.get("by_vendor", {}).items()))
    console.print(f"Indexed {ingest.get('indexed')} images, skipped {ingest.get('skipped')} files; by vendor: {vendors}")
    console.print(f"[green]Wrote[/] {out}" + (f" and {report}" if report else ""))

