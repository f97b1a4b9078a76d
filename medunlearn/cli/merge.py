"""`medunlearn merge`: one checkpoint from several per-policy unlearning runs, judged per policy."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medunlearn.cli import options as o
from medunlearn.cli.app import app, console, guarded


@app.command("merge")
@guarded
def merge(
    runs: Annotated[list[Path] | None, typer.Argument(help="Unlearning run directories (each from the same base).")] = None,
    base: Annotated[Path | None, typer.Option("--base", help="The deployed base checkpoint the runs started from.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="A merge method (see `medunlearn methods`); omitted: try --candidates cheapest first and keep the first that meets every policy.")] = None,
    candidates: Annotated[str | None, typer.Option("--candidates", help="Comma-separated methods tried without --method (default linear,task_arithmetic,ties,learned_coefficients,merge_repair).")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Comma-separated weight per run.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Method parameter KEY=VALUE (e.g. density=0.5).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="mergekit-style YAML (merge_method, base_model, models, parameters).")] = None,
    cohort: Annotated[Path | None, typer.Option("--cohort", help="Cohort table: judge every policy's criteria on validation rows, and evaluate on each forget set and their union.")] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="Union retrain (train --exclude with every run's rule OR-ed): evaluated beside the merge (needs --cohort).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Merged checkpoint directory to write.")] = Path("merged"),
    force: Annotated[bool, typer.Option("--force", help="Merge runs that did not meet their own criteria (or whose split hash differs).")] = False,
    seed: o.Seed = 0,
    overwrite: o.Overwrite = False,
) -> None:
    """Merge per-policy unlearning runs of one base model into a single checkpoint.

    The merged model is judged against EVERY source policy's acceptance criteria and the retain guard on
    validation rows; exit code 3 when any is not met (the checkpoint is still written, accepted: false).
    Runs that did not meet their own criteria are refused unless --force.

    Examples:
      [bold]medunlearn merge runs/device runs/site --base base/ --cohort cohort.csv --out merged/[/]
      [bold]medunlearn merge runs/device runs/site --base base/ --method learned_coefficients --cohort cohort.csv --out merged/[/]
      [bold]medunlearn merge --config configs/merge/ties.yaml --cohort cohort.csv --out merged/[/]
    """
    from medunlearn.configio import parse_set_options
    from medunlearn.errors import ConfigError
    from medunlearn.workflow.steps_merge import merge as run_merge

    if config is None and (not runs or base is None):
        raise ConfigError("Expected run directories and --base (or --config), but got "
                          f"{'no runs' if not runs else 'no --base'}.")
    try:
        w = [float(x) for x in weights.split(",")] if weights else None
    except ValueError as exc:
        raise ConfigError(f"Expected comma-separated numbers for --weights, but got {weights!r}.") from exc
    if candidates is not None and (method is not None or config is not None):
        raise ConfigError("Expected --candidates only without --method/--config, but got both.")
    cands = [c.strip() for c in candidates.split(",")] if candidates else None
    if force:
        console.print("[yellow]--force:[/] runs that did not meet their own criteria (or whose split differs) "
                      "are merged anyway; the merged card records this.")
    path, metrics = run_merge(runs or [], base, out, method=method, cohort=cohort, params=parse_set_options(set_),
                              weights=w, config_path=config, seed=seed, overwrite=overwrite, force=force,
                              candidates=cands, reference=reference)
    for warning in metrics.get("warnings", []):
        console.print(f"[yellow]Warning:[/] {warning}")
    if "selection" in metrics:
        print_selection(metrics["selection"])
    chosen = metrics.get("selection", {}).get("chosen") or method or "config"
    if "policies" in metrics:
        from medunlearn.cli.evaluate import print_metrics

        print_metrics({**metrics["policies"], "union": metrics["union"]}, title=f"Merged ({chosen}) per policy")
    acceptance = metrics["acceptance"]
    if acceptance["met"] is None:
        console.print(f"[yellow]Not evaluated:[/] {acceptance['reason']} (pass --cohort). Wrote {path}")
        return
    print_merge_acceptance(acceptance)
    if not acceptance["met"]:
        console.print(f"[bold red]Criteria NOT met[/] by the merged model: {acceptance['reason']}. "
                      f"Wrote {path} (checkpoint marked accepted: false).")
        raise typer.Exit(3)
    console.print(f"[green]Every policy's criteria met.[/] Wrote {path}")


def print_selection(selection: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="Merge methods tried (cheapest first; validation data)")
    for col in ("method", "criteria", "points short", "time s"):
        table.add_column(col)
    for c in selection["candidates"]:
        verdict = "skipped" if c["reason"].startswith("skipped") else ("[green]met[/]" if c["met"] else "[red]not met[/]")
        table.add_row(c["method"], verdict, "–" if c["violation"] is None else f"{c['violation']:.1f}",
                      f"{c['time_s']:.1f}")
    console.print(table)
    console.print(f"Chose {selection['why']}")


def print_merge_acceptance(acceptance: dict[str, Any]) -> None:
    """One table: every policy's checks on the merged model, then the shared retain check."""
    from rich.table import Table

    from medunlearn.cli.verdict import _threshold

    table = Table(title="Acceptance of the merged model, per policy (validation data)")
    for col in ("policy", "its run", "criterion", "value", "required", "result"):
        table.add_column(col)
    own = {True: "met", False: "NOT met", None: "not evaluated"}
    rows = [(r["policy"], own[r.get("run_accepted")], r["checks"]) for r in acceptance["policies"]]
    rows.append(("retain (rows no policy forgets)", "", acceptance["retain"]["checks"]))
    for name, verdict, checks in rows:
        for i, c in enumerate(checks):
            table.add_row(name if i == 0 else "", verdict if i == 0 else "", c["label"],
                          f"{c['value']:.1f}{c.get('unit', '')}", _threshold(c),
                          "[green]PASS[/]" if c["passed"] else "[red]FAIL[/]")
    console.print(table)
