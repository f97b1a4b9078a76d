"""`medunlearn evaluate`: the evaluation suite for one checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli import options as o
from medunlearn.cli.adopt import SourceDatalist, SourceMembership, source_options
from medunlearn.cli.app import app, console, guarded


def print_metrics(results: dict, title: str = "") -> None:
    from medunlearn.evaluate.table import compare_table

    table = compare_table(results)
    if title:
        table.title = title
    console.print(table)


@app.command("evaluate")
@guarded
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="Checkpoint to evaluate.")],
    cohort: o.CohortOpt,
    device: o.Device = None, site: o.Site = None, manufacturer: o.Manufacturer = None, patient: o.Patient = None,
    study_date_before: o.Before = None, study_date_after: o.After = None, where: o.Where = None,
    outliers: o.Outliers = None, rules: o.Rules = None,
    original: Annotated[Path | None, typer.Option("--original", help="The deployed model before unlearning.")] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="The retrain-from-scratch reference.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="metrics.json to write.")] = None,
    seed: o.Seed = 0,
    cache_dir: o.CacheDir = None,
    force: Annotated[bool, typer.Option("--force", help="Evaluate even if the checkpoint came from another cohort split.")] = False,
    overwrite: o.Overwrite = False,
    datalist: SourceDatalist = None, membership: SourceMembership = None,
) -> None:
    """Forget / retain / test accuracy, per device and site, AUROC, ECE, MIA, and the gap to retraining.

    Example: [bold]medunlearn evaluate --model runs/psg --cohort cohort.csv --device ScannerX --original base/ --reference retrain/ --out metrics.json[/]
    """
    from medunlearn.workflow.steps_evaluate import evaluate as run_evaluate

    rule = o.rule_from_options(device, site, manufacturer, patient, study_date_before, study_date_after,
                               where, outliers, rules)
    metrics = run_evaluate(model, cohort, rule, original=original, reference=reference, out=out, seed=seed,
                           force=force, overwrite=overwrite, cache_dir=cache_dir,
                           adopt_options=source_options(datalist, membership))
    from medunlearn.runtime import is_main_process

    if not is_main_process():  # torchrun: rank 0 reports
        return
    for w in metrics.get("warnings", []):
        console.print(f"[yellow]Warning:[/] {w}")
    print_metrics({model.name: metrics}, title=f"Evaluation — {rule.describe()}")
    if out is not None:
        console.print(f"[green]Wrote[/] {out}")
