"""`medunlearn adopt`: a deployed model (MONAI bundle, TorchScript file, state dict) -> a base checkpoint."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli import options as o
from medunlearn.cli.app import app, console, guarded
from medunlearn.errors import ConfigError

# For `forget` / `evaluate` / `tune --model SRC` (a model medunlearn did not train, adopted in memory).
SourceDatalist = Annotated[Path | None, typer.Option(
    "--datalist", help="With --model SRC (a bundle / TorchScript / state dict): the rows that trained it.")]
SourceMembership = Annotated[str | None, typer.Option(
    "--membership", help="With --model SRC and no datalist: 'unknown' (explicit).")]


def source_options(datalist: Path | None, membership: str | None) -> dict | None:
    """adopt_options for a workflow step, or None when neither was given."""
    if membership not in (None, "unknown"):
        raise ConfigError(f"Expected --membership unknown (or --datalist), but got {membership!r}.")
    if datalist is None and membership is None:
        return None
    return {"datalist": datalist, "membership": membership}


def _json(text: str | None, what: str):
    if text is None:
        return None
    p = Path(text)
    raw = p.read_text(encoding="utf-8") if p.is_file() else text
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"Expected {what} as JSON (inline or a file), but it does not parse.") from exc


@app.command("adopt")
@guarded
def adopt(
    src: Annotated[Path, typer.Argument(help="Bundle folder, TorchScript file, or state dict (.pt) with --arch.")],
    cohort: o.CohortOpt,
    out: Annotated[Path, typer.Option("--out", help="Base checkpoint folder to write.")],
    arch: Annotated[str | None, typer.Option("--arch", help='For a state dict: {"network": "DenseNet121", "args": {...}}.')] = None,
    preprocessing: Annotated[str | None, typer.Option("--preprocessing", help="For --arch: JSON list of MONAI transforms.")] = None,
    postprocessing: Annotated[str | None, typer.Option("--postprocessing", help="For --arch: JSON list (Activationsd ...).")] = None,
    class_names: Annotated[str | None, typer.Option("--class-names", help="Comma-separated, in output order.")] = None,
    datalist: Annotated[Path | None, typer.Option("--datalist", help="Decathlon JSON: the rows that trained it.")] = None,
    membership: Annotated[str | None, typer.Option("--membership", help="'unknown' (explicit) when there is no datalist.")] = None,
    expected: Annotated[Path | None, typer.Option("--expected", help="predictions.csv from `monai.bundle run`.")] = None,
    per_class: Annotated[int, typer.Option("--per-class", min=1, max=1000, help="Fidelity images per class.")] = 4,
    overwrite: o.Overwrite = False,
) -> None:
    """Adopt a model medunlearn did not train; nothing in SRC is run. Refuses on any fidelity mismatch.

    Example: [bold]medunlearn adopt bundle/ --cohort cohort.csv --datalist datalist.json --out base/[/]
    """
    from medunlearn.workflow.steps_adopt import adopt as run_adopt

    if membership not in (None, "unknown"):
        raise ConfigError(f"Expected --membership unknown (or --datalist), but got {membership!r}.")
    meta = run_adopt(src, cohort, out, overwrite=overwrite, arch=_json(arch, "--arch"),
                     preprocessing=_json(preprocessing, "--preprocessing"),
                     postprocessing=_json(postprocessing, "--postprocessing"),
                     class_names=[c.strip() for c in class_names.split(",")] if class_names else None,
                     expected=expected, datalist=datalist, membership=membership, per_class=per_class)
    a = meta["adoption"]
    f = a["fidelity"]
    console.print(f"Adopted {a['source_kind']} {meta['config']['network']} ({a['head']['kind']} head); fidelity on "
                  f"{f['n_images']} images: max prob diff {f['max_prob_diff']:.2e} <= {f['tolerance']:g}")
    for w in a["membership"]["warnings"]:
        console.print(f"[yellow]Warning:[/] {w}")
    console.print(f"[green]Wrote[/] {out}")
