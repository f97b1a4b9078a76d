"""Every unlearning method × both goals on the SYNTHETIC device-deprecation scenario (forget ScannerX),
against the retrain reference; prints ONE table. A benchmark, not a test.

    python benchmarks/unlearn_device.py [--out bench_out/device] [--seeds 1] [--quick] [--methods psg,famr]

Reuses `medunlearn.benchmarking.runner.run_bench` (suite "device"): models are cached and cells resume.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from medunlearn.benchmarking.runner import run_bench
    from medunlearn.benchmarking.tables import format_stat

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_out/device")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    args = p.parse_args(argv)
    from medunlearn.unlearn import METHODS

    methods = args.methods.split(",") if args.methods else METHODS.names()
    res = run_bench("device", methods=methods, seeds=args.seeds, quick=args.quick, out=args.out,
                    goals=["suppression", "equivalence"], command=" ".join(["python", *sys.argv]))
    sc = res["scenarios"]["device"]
    cols = ("FA", "RA", "TA-retain", "TA-forget", "conf TF", "MIA-eff", "Avg-Gap", "time s", "RTE")
    keys = ("forget_acc", "retain_acc", "test_retain_acc", "test_forget_acc", "test_forget_confidence",
            "mia_efficacy", "avg_gap", "wall_time_s", "rte")
    table = Table(title=f"Device deprecation (forget ScannerX), SYNTHETIC cohort; {sc['counts']}")
    for c in ("method", "goal", *cols):
        table.add_column(c, justify="left" if c in ("method", "goal") else "right")
    for name in ("original", "retrain"):
        core = sc[name]
        table.add_row(name, "–", *[("–" if core.get(k) is None else f"{core[k]:.{2 if k == 'avg_gap' else 1}f}")
                                   for k in keys])
    for goal, rows in sc["goals"].items():
        for method, row in rows.items():
            if not row["seeds"]:
                table.add_row(method, goal, *["error"] * len(keys))
                continue
            table.add_row(method, goal, *[format_stat(row[k], 2 if k == "avg_gap" else 1, "×" if k == "rte" else "")
                                          for k in keys])
    Console(width=200).print(table)
    print(f"results: {args.out}/results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
