"""`medunlearn tune`: choose a method's hyperparameters on validation rows (Optuna study) for one policy."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli import options as o
from medunlearn.cli.adopt import SourceDatalist, SourceMembership, source_options
from medunlearn.cli.app import app, console, guarded


@app.command("tune")
@guarded
def tune(
    *,  # keyword-only: --model and --out stay required (no default) in their place in --help
    cohort: o.CohortOpt,
    device: o.Device = None, site: o.Site = None, manufacturer: o.Manufacturer = None, patient: o.Patient = None,
    study_date_before: o.Before = None, study_date_after: o.After = None, where: o.Where = None,
    outliers: o.Outliers = None, rules: o.Rules = None,
    model: Annotated[Path, typer.Option("--model", help="Deployed (base) checkpoint directory; never modified.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for <method>.yaml and the study folder <method>-study/.")],
    method: Annotated[str, typer.Option("--method", help="Unlearning method whose declared search space is searched; auto (the default): the method `forget --method auto` tries first for this kind of policy (famr for a device, site or outliers; psg_frozen for a class).")] = "auto",
    goal: Annotated[str, typer.Option("--goal", help="suppression or equivalence (the criteria the trials must meet).")] = "suppression",
    trials: Annotated[int, typer.Option("--trials", help="Most trials to run (trial 0 = the starting config).")] = 30,
    time_budget: Annotated[str, typer.Option("--time-budget", help="Wall-clock cap on the study: 90s, 10m, 1h30m; the trial in flight is stopped.")] = "10m",
    config: Annotated[Path | None, typer.Option("--config", help="Starting config YAML (trial 0); searched fields are varied from it.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Pin one field: KEY=VALUE (removed from the search; criteria knobs such as forget_tol, retain_drop go here).")] = None,
    retain_weight: Annotated[float, typer.Option("--retain-weight", help="Weight of val_retain accuracy lost (in units of retain_drop) against relative wall time.")] = 1.0,
    seed: o.Seed = 0,
    force: Annotated[bool, typer.Option("--force", help="Proceed when the checkpoint's split hash does not match this cohort.")] = False,
    overwrite: o.Overwrite = False,
    datalist: SourceDatalist = None, membership: SourceMembership = None,
) -> None:
    """Tune an unlearning method's hyperparameters on VALIDATION rows (test rows are sealed).

    An Optuna study (TPE seeded by --seed, median pruning) searches the method's declared search space.

    The acceptance criteria are constraints: the best trial is the fastest, least retain-damaging trial among those that met them.

    Writes OUT/METHOD.yaml for `forget --config` (its header records the command, the study seed and the date) and OUT/METHOD-study/ (trials.csv, importance.png, best_trial.json, provenance.json). Exit code 3 when no trial met the criteria (then no YAML is written).

    Examples:
      [bold]medunlearn tune --cohort cohort.csv --model base/ --device ScannerX --trials 30 --time-budget 10m --out tuned/[/]   (tunes famr)
      [bold]medunlearn tune --cohort cohort.csv --model base/ --site "Site B" --method famr --goal equivalence --trials 20 --out tuned/[/]
      [bold]medunlearn forget --cohort cohort.csv --model base/ --device ScannerX --method famr --config tuned/famr.yaml --out runs/famr[/]
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medunlearn.configio import parse_set_options
    from medunlearn.errors import ConfigError
    from medunlearn.workflow.steps_tune import tune as run_tune

    rule = o.rule_from_options(device, site, manufacturer, patient, study_date_before, study_date_after,
                               where, outliers, rules)
    if rule is None:
        raise ConfigError("Expected a forget rule (--device, --site, --manufacturer, --patient, --study-date-*, "
                          "--where, --outliers or --rules), but got none.")
    command = "medunlearn " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "medunlearn tune"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("tune: trial 0 (starting config)", total=trials)

        def on_trial(rec: dict, best: dict | None) -> None:
            lead = f"best trial {best['number']} ({best['objective']:.3f})" if best else "none met yet"
            bar.update(task, advance=1, description=f"tune: trial {rec['number']} {rec['state']}"
                       f"{' (met)' if rec.get('feasible') else ''}; {lead}")

        outcome = run_tune(cohort, model, rule, out, method=method, goal=goal, trials=trials, time_budget=time_budget,
                           config_path=config, overrides=parse_set_options(set_), seed=seed,
                           retain_weight=retain_weight, overwrite=overwrite, force=force, command=command,
                           on_trial=on_trial, adopt_options=source_options(datalist, membership))
    _print_summary(outcome.summary)
    if outcome.yaml_path is None:
        console.print(f"[bold red]No trial met the criteria.[/] Wrote the study to {outcome.study_dir} (no YAML).")
        raise typer.Exit(3)
    console.print(f"[green]Wrote[/] {outcome.yaml_path} and {outcome.study_dir}/")


def _print_summary(s: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{s['method']} ({s['goal']}) — {s['rule']} — validation only"
                        f"{' — SYNTHETIC cohort' if s['synthetic'] else ''}")
    for col in ("", "trial", "met", "wall s", "val checks"):
        table.add_column(col)
    for label, rec in (("starting config", s["reference"]), ("best", s["best"])):
        if rec:
            checks = ", ".join(f"{k} {v:g}" for k, v in rec.get("checks", {}).items()) or rec.get("state", "")
            table.add_row(label, str(rec["number"]), "yes" if rec.get("feasible") else "no",
                          f"{rec['wall_s']:.1f}", checks)
    console.print(table)
    if s["best"]:
        console.print("Chosen: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in s["best"]["params"].items()))
