"""Do tuned settings hold on a cohort never used in tuning? Runs `forget` with each method's starting config
(configs/unlearn) and with its tuned YAML on one cohort + base checkpoint, and prints the acceptance verdict
(validation, as the controller judges it) next to the test-split numbers (reported, never used to choose).

    python benchmarks/tune_transfer.py --cohort cohort12.csv --model base12 --device ScannerX \
        --tuned tuned/ --methods psg famr --out runs12/

The cohort is SYNTHETIC when made by `medunlearn cohort synth`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from medunlearn.configio import REPO_CONFIGS
from medunlearn.selection.rules import build_rule
from medunlearn.workflow.steps_forget import forget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", required=True, nargs="+")
    ap.add_argument("--tuned", required=True, type=Path)
    ap.add_argument("--methods", nargs="+", default=["psg", "famr"])
    ap.add_argument("--goal", default="suppression")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    rule = build_rule(device=args.device)
    print(f"{'method':<14} {'config':<8} {'met(val)':>8} {'val FA':>7} {'val conf':>8} {'val RA':>7} "
          f"{'test FA':>8} {'test RA':>8} {'wall s':>7} {'steps':>6}")
    for method in args.methods:
        for label, cfg in (("default", REPO_CONFIGS / "unlearn" / f"{method}.yaml"), ("tuned", args.tuned / f"{method}.yaml")):
            _, m = forget(args.cohort, args.model, rule, args.out / f"{method}-{label}", method=method, goal=args.goal,
                          config_path=cfg, seed=args.seed, overwrite=True)
            a = m["acceptance"]
            c = {x["name"]: x["value"] for x in a["checks"]}
            print(f"{method:<14} {label:<8} {str(a['met']):>8} {c.get('forget_accuracy', float('nan')):>7.1f} "
                  f"{c.get('forget_confidence', float('nan')):>8.1f} {c['retain_accuracy']:>7.1f} "
                  f"{m['test_forget_acc']:>8.1f} {m['test_retain_acc']:>8.1f} {m['wall_time_s']:>7.1f} "
                  f"{a['steps_run']:>6}")


if __name__ == "__main__":
    main()
