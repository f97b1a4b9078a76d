"""`medunlearn forget`: select a forget set (--dry-run) or unlearn it from a deployed model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli import options as o
from medunlearn.cli.adopt import SourceDatalist, SourceMembership, source_options
from medunlearn.cli.app import app, console, guarded
from medunlearn.cli.verdict import print_acceptance
from medunlearn.selection.table import selection_table


@app.command("forget")
@guarded
def forget(
    cohort: o.CohortOpt,
    device: o.Device = None, site: o.Site = None, manufacturer: o.Manufacturer = None, patient: o.Patient = None,
    study_date_before: o.Before = None, study_date_after: o.After = None, where: o.Where = None,
    outliers: o.Outliers = None, rules: o.Rules = None,
    model: Annotated[Path | None, typer.Option("--model", help="Deployed (base) checkpoint directory; never modified.")] = None,
    method: Annotated[str, typer.Option("--method", help="Unlearning method (see `medunlearn methods`), or auto (the default): the recommended methods for the policy in order, keeping the first that meets the criteria.")] = "auto",
    goal: Annotated[str, typer.Option("--goal", help="suppression (held-out forget-domain images fall to chance) or equivalence (look like the retrained model).")] = "suppression",
    config: Annotated[Path | None, typer.Option("--config", help="YAML of method hyperparameters.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one hyperparameter: KEY=VALUE (repeatable).")] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="Retrain-reference checkpoint to score against (Avg-Gap, RTE).")] = None,
    audit: Annotated[Path | None, typer.Option("--audit", help="`audit prepare` folder: with --goal equivalence, the per-patient LiRA audit is the stop criterion and judges the returned state.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory to write (checkpoint, metrics.json, config, provenance).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print the selection and write split.json (to --out or ./split.json).")] = False,
    seed: o.Seed = 0,
    torch_device: o.TorchDevice = None,
    force: Annotated[bool, typer.Option("--force", help="Proceed when the checkpoint's split hash does not match this cohort.")] = False,
    overwrite: o.Overwrite = False,
    datalist: SourceDatalist = None, membership: SourceMembership = None,
) -> None:
    """Unlearn the images matching a forget rule from a deployed model.

    The run is judged on validation rows against its acceptance criteria (set with --set forget_tol=…,
    confidence_margin=…, retain_drop=…, forget_target=… or the config YAML); exit code 3 when they are not met.
    The default --method auto runs the recommended methods for the policy in order and keeps the first that
    meets the criteria (README "which method for which policy").

    Examples:
      [bold]medunlearn forget --cohort cohort.csv --device ScannerX --dry-run[/]
      [bold]medunlearn forget --cohort cohort.csv --model base/ --device ScannerX --out runs/scannerx[/]
      [bold]medunlearn forget --cohort cohort.csv --model base/ --where label=mass --method psg_frozen --out runs/mass[/]
      [bold]medunlearn forget --cohort cohort.csv --model base/ --device ScannerX --method famr --config tuned/famr.yaml --out runs/famr[/]
      [bold]medunlearn forget --cohort cohort.csv --model base/ --site "Site B" --method famr --goal equivalence --reference retrain/ --out runs/famr_eq[/]
    """
    from medunlearn.commit import claim_files
    from medunlearn.errors import ConfigError
    from medunlearn.fileio import check_apart, write_json
    from medunlearn.workflow.outputs import cohort_inputs

    rule = o.rule_from_options(device, site, manufacturer, patient, study_date_before, study_date_after,
                               where, outliers, rules)
    if rule is None:
        raise ConfigError("Expected a forget rule (--device, --site, --manufacturer, --patient, --study-date-*, "
                          "--where, --outliers or --rules), but got none.")
    if dry_run:
        from medunlearn.selection.split import select
        from medunlearn.workflow.cohort_checks import load_cohort

        target = (out / "split.json") if out is not None else Path("split.json")
        selection = select(load_cohort(cohort), rule, seed=seed)  # a bad rule is reported before any output clash
        check_apart([target], cohort_inputs(cohort))
        with claim_files([target], overwrite=overwrite):  # one writer; a killed write's temp file is removed
            console.print(f"Rule: [bold]{rule.describe()}[/]")
            console.print(selection_table(selection))
            write_json(target, selection.to_json())
        console.print(f"[green]Wrote[/] {target}")
        return
    if model is None or out is None:
        raise ConfigError("Expected --model and --out to unlearn (or --dry-run to only select), but got "
                          f"{'no --model' if model is None else 'no --out'}.")
    from medunlearn.cli.evaluate import print_metrics
    from medunlearn.configio import parse_set_options
    from medunlearn.workflow.steps_forget import forget as run_forget

    path, metrics = run_forget(cohort, model, rule, out, method=method, goal=goal, config_path=config,
                               overrides=parse_set_options(set_), reference=reference, seed=seed,
                               overwrite=overwrite, force=force, progress=True,
                               torch_device=o.checked_torch_device(torch_device), audit=audit,
                               adopt_options=source_options(datalist, membership))
    from medunlearn.runtime import is_main_process

    if not is_main_process():  # torchrun: rank 0 reports
        return
    method = metrics.get("method", method)  # --method auto: the candidate it kept
    for a in metrics["acceptance"].get("auto", []):
        console.print(f"auto: {a['method']} {a['preset'] or ''} {'met' if a['met'] else 'not met'} "
                      f"({a['wall_time_s']:.0f} s)")
    print_metrics({method: metrics}, title=f"{method} ({goal}) — {rule.describe()}")
    print_acceptance(metrics["acceptance"])
    if not metrics["acceptance"]["met"]:
        console.print(f"[bold red]Criteria NOT met.[/] Wrote {path} (checkpoint marked accepted: false; "
                      f"see {path / 'trace.csv'}).")
        from medunlearn.unlearn import METHODS

        if METHODS.get(method).search_space and not metrics["acceptance"].get("underpowered"):
            console.print(f"Next: `medunlearn tune --method {method} ...` with the same cohort, model and rule "
                          "searches this method's settings on validation rows under these criteria.")
        raise typer.Exit(3)
    console.print(f"[green]Criteria met.[/] Wrote {path}")
