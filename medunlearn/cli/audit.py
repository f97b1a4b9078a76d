"""`medunlearn audit prepare|run`: per-example membership evidence that withdrawn patients are forgotten."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli import options as o
from medunlearn.cli.app import app, console, guarded
from medunlearn.runtime import is_main_process

audit_app = typer.Typer(help="Reference models and a per-patient LiRA membership audit of a withdrawal.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")
Fpr = Annotated[float | None, typer.Option("--fpr", help="Stated false-positive rate per patient and for the forget set (default 0.01).")]


@audit_app.command("prepare")
@guarded
def prepare(
    cohort: o.CohortOpt,
    model: Annotated[Path, typer.Option("--model", help="The deployed base checkpoint (its recipe is copied; never modified).")],
    out: Annotated[Path, typer.Option("--out", help="Audit folder to write (reference models, membership, scores).")],
    k: Annotated[int, typer.Option("--k", min=2, max=64, help="Reference models to train (K trainings, paid once).")] = 8,
    seed: o.Seed = 0,
    torch_device: o.TorchDevice = None,
    force: Annotated[bool, typer.Option("--force", help="Proceed when the base's split hash does not match this cohort.")] = False,
    overwrite: o.Overwrite = False,
) -> None:
    """Train K reference models with the base's recipe on random patient halves of the training rows.

    Every later withdrawal reuses them. Test rows are never read.

    Examples:
      [bold]medunlearn audit prepare --cohort cohort.csv --model base/ --out audit/ --k 8[/]
      [bold]torchrun --nproc-per-node 2 -m medunlearn.cli.main audit prepare --cohort cohort.csv --model base/ --out audit/[/]
    """
    from medunlearn.workflow.steps_audit import prepare as run_prepare

    path, manifest = run_prepare(cohort, model, out, k=k, seed=seed, overwrite=overwrite, progress=True,
                                 torch_device=torch_device, force=force)
    if is_main_process():
        console.print(f"[green]Wrote[/] {path}: {k} reference models ({manifest['recipe_source']}), "
                      f"{manifest['cost']['wall_time_s']:.1f} s of training")


@audit_app.command("run")
@guarded
def run(
    cohort: o.CohortOpt,
    audit: Annotated[Path, typer.Option("--audit", help="Folder written by `medunlearn audit prepare`.")],
    model: Annotated[Path, typer.Option("--model", help="Checkpoint to audit: the base, a run unlearned from it, or a merge.")],
    patient: o.Patient = None, device: o.Device = None, site: o.Site = None, where: o.Where = None,
    rules: o.Rules = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="Retrain-reference checkpoint, audited alongside.")] = None,
    out: Annotated[Path, typer.Option("--out", help="audit.json to write.")] = Path("audit.json"),
    fpr: Fpr = None,
    torch_device: o.TorchDevice = None,
    overwrite: o.Overwrite = False,
) -> None:
    """Per patient: are their images indistinguishable from held-out patients' at the stated FPR?

    Example: [bold]medunlearn audit run --cohort cohort.csv --audit audit/ --model runs/p1 --patient 3f2a... --reference retrain/[/]
    """
    from medunlearn.workflow.steps_audit import run_audit

    rule = o.rule_from_options(device=device, site=site, patient=patient, where=where, rules=rules)
    path, result = run_audit(audit, model, cohort, rule, out, reference=reference, alpha=fpr, overwrite=overwrite,
                             torch_device=torch_device)
    print_audit(result)
    console.print(f"Wrote {path}")


def print_audit(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"Membership audit ({result['method']}, K={result['reference_models']}, "
                        f"{result['fpr']:.0%} FPR)")
    for col in ("patient", "images", "verdict", "p original", "p audited", "smallest detectable effect",
                "membership left (Holm)"):
        table.add_column(col)
    for p, e in result["patients"].items():
        table.add_row(p, str(e["images"]), e["verdict"], f"{e['p_original']:.3g}", f"{e['p_audited']:.3g}",
                      f"{e['min_detectable_effect']:.2f}", "yes" if e["still_detected"] else "no")
    console.print(table)
    colour = "green" if result["forgotten"] else "red"
    console.print(f"[{colour}]{result['summary']}[/]")
    c = result["calibration"]
    console.print(f"calibration: {c['flagged']}/{c['patients']} held-out patients flagged (FPR {c['fpr']:.1%}, "
                  f"bound {c['bound']:.0%}: {'within' if c['within_bound'] else 'NOT within'})")
