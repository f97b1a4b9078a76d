"""A/B sweep of PSG settings on VALIDATION probes of a SYNTHETIC cohort (device-deprecation suppression).

Each cell runs `METHODS.get(method)(**overrides).run(...)` under the controller for several seeds and reports
the controller's own acceptance record (val_forget accuracy and mean max-softmax, val_retain accuracy, all on
validation probes) — test rows are never read, so defaults chosen from this table are not chosen on test data.

    python benchmarks/psg_ab.py --cohort c/cohort.csv --base c/base --device ScannerX --seeds 0 1 2 \
        --cell 'psg' --cell 'psg target=soft nearest_wrong=false' --out ab.json
A cell is a method name followed by KEY=VALUE overrides. Prints a markdown table (mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from medunlearn.benchmarking.tables import format_stat, markdown_table, mean_std


def run_cell(df, base, base_meta, rule, method: str, overrides: dict, seed: int) -> dict:
    from medunlearn.runtime import RunContext
    from medunlearn.unlearn import METHODS
    from medunlearn.workflow.splits import split_data_for, split_settings

    split_seed, fractions, image_size = split_settings(base_meta, seed)
    data = split_data_for(df, rule, split_seed, image_size, fractions, base_meta.get("class_names"))
    ctx = RunContext(seed=seed)
    t0 = time.perf_counter()
    out = METHODS.get(method)(**overrides).run(base, data, ctx, goal="suppression")
    wall = time.perf_counter() - t0
    acc = out.acceptance
    vals = {c["name"]: c["value"] for c in acc["checks"]}
    return {"met": acc["met"], "forget_acc": vals.get("forget_accuracy"), "forget_conf": vals.get("forget_confidence"),
            "retain_acc": vals.get("retain_accuracy"), "retain_original": acc["criteria"]["retain_original"],
            "max_confidence": acc["criteria"]["max_confidence"], "step": acc["step"], "steps_run": acc["steps_run"],
            "repair_steps": acc["repair_steps"], "wall_s": round(wall, 2),
            "min_conf_seen": min(r["forget_conf"] for r in out.trace),
            "attack_success": ctx.log.get(method, {}).get("attack_success")}


def parse_cell(text: str) -> tuple[str, dict]:
    method, *pairs = text.split()
    return method, dict(p.split("=", 1) for p in pairs)


def fmt(xs: list[float]) -> str:
    return format_stat(mean_std(xs))


def main() -> None:
    from medunlearn.selection.rules import build_rule
    from medunlearn.workflow.cohort_checks import load_cohort
    from medunlearn.workflow.steps_forget import load_model_dir

    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--device", default="ScannerX")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cell", action="append", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    df = load_cohort(args.cohort)
    base, meta = load_model_dir(args.base, "a base checkpoint")
    rule = build_rule(device=[args.device])
    results = []
    print("\n".join(markdown_table(["cell", "met", "val_forget acc %", "val_forget conf %", "val_retain % (orig)",
                                     "steps", "wall s"])))
    for cell in args.cell:
        method, ov = parse_cell(cell)
        runs = [run_cell(df, base, meta, rule, method, ov, s) for s in args.seeds]
        results.append({"cell": cell, "runs": runs})
        met = sum(r["met"] for r in runs)
        print(f"| `{cell}` | {met}/{len(runs)} | {fmt([r['forget_acc'] for r in runs])} | "
              f"{fmt([r['forget_conf'] for r in runs])} (≤ {runs[0]['max_confidence']:.1f}) | "
              f"{fmt([r['retain_acc'] for r in runs])} ({runs[0]['retain_original']:.1f}) | "
              f"{fmt([r['step'] for r in runs])} | {fmt([r['wall_s'] for r in runs])} |", flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
