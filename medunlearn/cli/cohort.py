"""`medunlearn cohort synth|index`: build the cohort table."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli.app import app, console, guarded
from medunlearn.cli.options import Overwrite, Seed

cohort_app = typer.Typer(help="Create the built-in synthetic cohort, or index a DICOM / NIfTI archive.",
                         no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")


@cohort_app.command("synth")
@guarded
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the SYNTHETIC DICOM cohort and labels.csv into.")],
    patients: Annotated[int | None, typer.Option("--patients", min=1, max=100_000, help="Number of synthetic patients (default 48; 120 with --3d).")] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", min=8, max=1024, help="Pixel rows/columns of each image (default 64; 24 with --3d).")] = None,
    three_d: Annotated[bool, typer.Option("--3d", help="Write 3D volumes: one DICOM slice series per volume (index with --volumes).")] = False,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Write the built-in SYNTHETIC multi-vendor cohort as real DICOM files plus labels.csv.

    Examples:
      [bold]medunlearn cohort synth data/synth --patients 48 --seed 0[/]
      [bold]medunlearn cohort synth data/synth3d --3d --patients 120 --image-size 24[/]
    """
    if three_d:
        from medunlearn.data.synthetic3d import synthesize_volume_cohort

        summary = synthesize_volume_cohort(out_dir, n_patients=patients or 120, seed=seed, size=image_size or 24,
                                           overwrite=overwrite)
        what = f"{summary.get('n_volumes')} volumes ({summary.get('n_files')} slice files)"
    else:
        from medunlearn.data.synthetic import synthesize_cohort

        summary = synthesize_cohort(out_dir, n_patients=patients or 48, seed=seed, image_size=image_size or 64,
                                    overwrite=overwrite)
        what = f"{summary.get('n_images')} images"
    console.print(f"[green]Wrote a SYNTHETIC cohort[/] to {out_dir}: {what} of "
                  f"{summary.get('n_patients')} patients; devices: {', '.join(map(str, summary.get('devices', [])))}")


@cohort_app.command("index")
@guarded
def index(
    data_dir: Annotated[Path, typer.Argument(help="Archive folder (DICOM files of any extension, NIfTI + JSON sidecars).")],
    out: Annotated[Path, typer.Option("--out", help="Cohort table to write (CSV).")] = Path("cohort.csv"),
    labels: Annotated[Path | None, typer.Option("--labels", help="labels.csv joined by sop_instance_uid or relative path.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Ingest report (JSON): every skipped file with its reason.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=256, help="Parallel header readers (default: CPU count).")] = None,
    salt_file: Annotated[Path | None, typer.Option("--salt-file", help="File holding the secret salt for pseudonymised ids (else $MEDUNLEARN_SALT).")] = None,
    salt: Annotated[str | None, typer.Option("--salt", help="Secret salt on the command line (discouraged: it lands in shell history; use --salt-file).")] = None,
    public_salt: Annotated[bool, typer.Option("--public-salt", help="Accept the public default salt on a non-synthetic archive (demos only: pseudonyms become reversible).")] = False,
    locator: Annotated[Path | None, typer.Option("--locator", help="Where to write the PRIVATE image locator (default: beside --out, as NAME.locator.json).")] = None,
    date_precision: Annotated[str, typer.Option("--date-precision", help="Study dates in the table: month (default), year or day.")] = "month",
    volumes: Annotated[bool, typer.Option("--volumes", help="One row per volume: DICOM slices grouped by SeriesInstanceUID (3D cohorts).")] = False,
    keep_column: Annotated[list[str] | None, typer.Option("--keep-column", help="Keep this extra numeric labels.csv column in the shareable table (repeatable; warned about). Only measurement_* columns are kept without it; any other is refused.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Index an imaging archive into a shareable cohort table (header-only reads, pseudonymised ids, no paths)
    and a private locator (image id -> file, relative to the archive) that stays with the archive.

    Example: [bold]medunlearn cohort index data/synth --labels data/synth/labels.csv --salt-file ~/.medunlearn-salt --out cohort.csv --report ingest.json[/]
    """
    import logging

    from medunlearn.commit import claim_files
    from medunlearn.data.cohort import index_archive, write_cohort
    from medunlearn.data.deid import PUBLIC_SALT_SOURCE, check_salt, read_salt_file
    from medunlearn.data.locator import locator_path
    from medunlearn.errors import ConfigError

    log = logging.getLogger("medunlearn")
    if salt_file is not None and salt is not None:
        raise ConfigError("Expected one salt source, but got both --salt-file and --salt.")
    loc = locator or locator_path(out)
    if salt is not None:
        check_salt(salt, "--salt")
        log.warning("--salt puts the secret in your shell history and process list; prefer --salt-file or "
                    "$MEDUNLEARN_SALT.")
    secret, source = (read_salt_file(salt_file), "file") if salt_file is not None else (salt, "argument")
    with claim_files([out, loc, report], overwrite=overwrite):  # held for the whole run: one writer at a time
        df, ingest = index_archive(data_dir, labels_csv=labels, salt=secret, workers=workers, progress=True,
                                   salt_source=source, public_salt=public_salt, date_precision=date_precision,
                                   unit="series" if volumes else "image", keep_columns=tuple(keep_column or ()))
        if ingest.get("salt_source") == PUBLIC_SALT_SOURCE:
            log.warning("Pseudonyms use the PUBLIC default salt: anyone can re-link them to guessed patient IDs"
                        + (" (accepted with --public-salt)." if public_salt else " (allowed: the archive is synthetic)."))
        write_cohort(df, out, overwrite=overwrite, locator=loc, extra_files={report: ingest} if report else None)
    vendors = ", ".join(f"{k or '(blank)'}: {v}" for k, v in sorted(ingest.get("by_vendor", {}).items()))
    console.print(f"Indexed {ingest.get('indexed')} {'volumes' if volumes else 'images'}, skipped {ingest.get('skipped')} files; by vendor: {vendors}")
    console.print(f"[green]Wrote[/] {out} (shareable)" + (f", {report}" if report else "")
                  + f" and the PRIVATE locator {loc} (keep it with the archive)")

