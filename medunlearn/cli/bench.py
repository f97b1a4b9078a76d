"""`medunlearn bench`: reproducible unlearning benchmarks (suites, cached models, resumable cells)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli.app import app, console, guarded


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@app.command("bench")
@guarded
def bench(
    suite: Annotated[str, typer.Argument(help="Suite: fashion-mnist, device, site or outlier.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (rerun with the same folder to resume).")],
    methods: Annotated[str | None, typer.Option("--methods", help="Comma-separated methods (default: the suite's).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, max=1000, help="Unlearning seeds 0..N-1 per cell (mean ± std).")] = 3,
    goals: Annotated[str | None, typer.Option("--goals", help="Comma-separated: suppression,equivalence.")] = None,
    scenarios: Annotated[str | None, typer.Option("--scenarios", help="Comma-separated subset of the suite's scenarios.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small data, fewer epochs and methods: minutes on 2 cores.")] = False,
    subset: Annotated[int | None, typer.Option("--subset", min=1, max=10_000_000, help="Cap on training images (seeded subset).")] = None,
    patients: Annotated[int | None, typer.Option("--patients", min=6, max=100_000, help="Synthetic cohort size (device, site, outlier suites; default 200).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Fashion-MNIST IDX folder (default: $MEDUNLEARN_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Bench YAML (default: configs/bench/<suite>.yaml).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute every cell (the model cache is kept).")] = False,
    tuned: Annotated[Path | None, typer.Option("--tuned", help="Folder written by `medunlearn tune`: adds a <method>+tuned row per <method>.yaml in it.")] = None,
) -> None:
    """Benchmark unlearning methods against the retrain reference; writes results.md, results.json and a plot.

    Examples:
      [bold]medunlearn bench fashion-mnist --quick --out bench_out/fm-quick[/]
      [bold]medunlearn bench device --methods psg,famr --seeds 3 --out bench_out/device[/]
      [bold]medunlearn bench device --methods psg,famr --tuned tuned/ --out bench_out/device-tuned[/]
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medunlearn.benchmarking.runner import run_bench

    command = "medunlearn " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "medunlearn bench"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(f"bench {suite}", total=None)

        def on_event(kind: str, info: dict) -> None:
            if kind == "start":
                bar.update(task, total=info["total"])
            elif kind == "phase":
                bar.update(task, description=info["text"])
            elif kind == "cell":
                bar.update(task, advance=1, description=f"{info['name']}{' (cached)' if info['skipped'] else ''}")

        run_bench(suite, methods=_names(methods), seeds=seeds, quick=quick, out=out, goals=_names(goals),
                  subset=subset, data_dir=data_dir, scenarios=_names(scenarios), overwrite=overwrite,
                  config=config, command=command, tuned=tuned, on_event=on_event, patients=patients)
    console.print(f"[green]Wrote[/] {out / 'results.md'}, {out / 'results.json'} and {out / 'avg_gap_vs_rte.png'}")
