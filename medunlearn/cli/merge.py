"""`medunlearn merge`: one checkpoint from several per-policy unlearning runs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medunlearn.cli import options as o
from medunlearn.cli.app import app, console, guarded


@app.command("merge")
@guarded
def merge(
    runs: Annotated[Optional[list[Path]], typer.Argument(help="Unlearning run directories (each from the same base).")] = None,
    base: Annotated[Optional[Path], typer.Option("--base", help="The deployed base checkpoint the runs started from.")] = None,
    method: Annotated[str, typer.Option("--method", help="linear, task_arithmetic, ties, dare_ties, fisher, greedy_soup or splice.")] = "ties",
    weights: Annotated[Optional[str], typer.Option("--weights", help="Comma-separated weight per run.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Method parameter KEY=VALUE (e.g. density=0.5).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="mergekit-style YAML (merge_method, base_model, models, parameters).")] = None,
    cohort: Annotated[Optional[Path], typer.Option("--cohort", help="Cohort table: re-evaluate on every source forget set and their union.")] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Union retrain (train --exclude with every run's rule OR-ed): evaluated beside the merge (needs --cohort).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Merged checkpoint directory to write.")] = Path("merged"),
    seed: o.Seed = 0,
    overwrite: o.Overwrite = False,
) -> None:
    """Merge per-policy unlearning runs of one base model into a single checkpoint.

    Examples:
      [bold]medunlearn merge runs/device runs/site --base base/ --method ties --cohort cohort.csv --out merged/[/]
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
    path, metrics = run_merge(runs or [], base, out, method=method, cohort=cohort, params=parse_set_options(set_),
                              weights=w, config_path=config, seed=seed, overwrite=overwrite,
                              reference=reference)
    if metrics:
        from medunlearn.cli.evaluate import print_metrics

        print_metrics({**metrics["policies"], "union": metrics["union"]}, title=f"Merged ({method}) per policy")
    console.print(f"[green]Wrote[/] {path}")
