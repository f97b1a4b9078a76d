"""Benchmark: merge two per-policy unlearning runs (device ScannerX, one site) with every merge method.

Target (issue 4/5): the merged model keeps each source policy's forgetting within 2 points of that run's
(test-forget accuracy) and retain accuracy within 1 point of the best run (test-retain accuracy on the
union of both policies). Data: the built-in SYNTHETIC cohort. Prints one table.

    python benchmarks/merge_policies.py [--patients 160] [--epochs 15] [--out bench_out/merge]
"""
from __future__ import annotations

import argparse
import shutil
import time
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

warnings.filterwarnings("ignore")


def main() -> None:
    from medunlearn.data.cohort import index_archive
    from medunlearn.data.synthetic import synthesize_cohort
    from medunlearn.evaluate.suite import evaluate_model
    from medunlearn.forget.rules import AnyOf, build_rule
    from medunlearn.merge.base import MERGES
    from medunlearn.models.checkpoint import load_checkpoint
    from medunlearn.workflow.common import split_data_for
    from medunlearn.workflow.demo import _second_site
    from medunlearn.workflow.steps_forget import forget
    from medunlearn.workflow.steps_merge import merge
    from medunlearn.workflow.steps_train import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--method", default="psg", help="unlearning method for both policies")
    ap.add_argument("--out", type=Path, default=Path("bench_out/merge"))
    args = ap.parse_args()
    console = Console()
    if args.out.exists():
        shutil.rmtree(args.out)
    synthesize_cohort(args.out / "archive", n_patients=args.patients, seed=0)
    df, _ = index_archive(args.out / "archive", labels_csv=args.out / "archive" / "labels.csv", salt="bench")
    base, _ = train(df, args.out / "base", seed=0, image_size=48, epochs=args.epochs, batch_size=32)
    rules = {"device": build_rule(device=["ScannerX"]), "site": build_rule(site=[_second_site(df, "ScannerX")])}
    runs = {}
    for name, rule in rules.items():
        runs[name], _ = forget(df, base, rule, args.out / "runs" / name, method=args.method, seed=0)
    base_model, meta = load_checkpoint(base)
    data = {name: split_data_for(df, rule, 0, 48, class_names=meta["class_names"]) for name, rule in rules.items()}
    union = split_data_for(df, AnyOf(list(rules.values())), 0, 48, class_names=meta["class_names"])
    source = {}
    for name, run in runs.items():
        model, _ = load_checkpoint(run)
        source[name] = {"tf": evaluate_model(model, data[name])["test_forget_acc"],
                        "tr_union": evaluate_model(model, union)["test_retain_acc"]}
    best_retain = max(s["tr_union"] for s in source.values())
    table = Table(title=f"Merging two {args.method} runs (SYNTHETIC cohort, {args.patients} patients)")
    for col in ("merge method", "TA-forget device (run→merged)", "TA-forget site (run→merged)",
                "TA-retain union (best run→merged)", "time s", "target met"):
        table.add_column(col)
    for method in MERGES.names():
        t0 = time.perf_counter()
        out, metrics = merge(list(runs.values()), base, args.out / "merged" / method, method=method, cohort=df)
        wall = time.perf_counter() - t0
        merged = {name: metrics["policies"][rule.describe()]["test_forget_acc"] for name, rule in rules.items()}
        tr = metrics["union"]["test_retain_acc"]
        ok = all(abs(merged[n] - source[n]["tf"]) <= 2.0 for n in rules) and tr >= best_retain - 1.0
        table.add_row(method, *[f"{source[n]['tf']:.1f} → {merged[n]:.1f}" for n in rules],
                      f"{best_retain:.1f} → {tr:.1f}", f"{wall:.1f}", "yes" if ok else "no")
    console.print(table)


if __name__ == "__main__":
    main()
