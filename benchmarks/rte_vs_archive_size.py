"""RTE (retrain time / unlearning time) vs archive size, for PSG and FAMR, on the SYNTHETIC cohorts.

For each size: synthesise the cohort (2D images, or 3D volumes with --dims 3), index it, train the base
model, retrain without ScannerX (timed: never extrapolated), then forget ScannerX with each method against
that reference. Prints one row per (size, method): images, retrain s, unlearn s, RTE, criteria met; writes
rte.csv and rte.png into --out.

    nice -n 5 python benchmarks/rte_vs_archive_size.py --sizes 1000 5000 20000 --out docs/results/rte
    nice -n 5 python benchmarks/rte_vs_archive_size.py --dims 3 --sizes 200 800 --image-size 24 --out docs/results/rte3d

Target (issue 12): at 20k 2D images, PSG and FAMR meet the ScannerX suppression criteria at RTE >= 50x.
Issue 31: with `forget`'s default (--methods auto), criteria (a)-(d) met, wall RTE >= 10x and compute RTE (ratio of
image passes, unlearn/cost.py; every auto candidate counted) >= 20x; rte.csv has both.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from medunlearn.data.cohort import index_archive
from medunlearn.selection.parse import build_rule
from medunlearn.workflow.steps_forget import forget
from medunlearn.workflow.steps_train import DEFAULT_RECIPE, train

IMAGES_PER_PATIENT = {2: 4.5, 3: 2.0}  # synthetic defaults: (3, 6) images or (1, 3) volumes per patient


def build(root: Path, dims: int, n: int, size: int, seed: int):
    patients = max(12, round(n / IMAGES_PER_PATIENT[dims]))
    if dims == 3:
        from medunlearn.data.synthetic3d import synthesize_volume_cohort

        synthesize_volume_cohort(root / "arc", n_patients=patients, seed=seed, size=size, overwrite=True)
    else:
        from medunlearn.data.synthetic import synthesize_cohort

        synthesize_cohort(root / "arc", n_patients=patients, seed=seed, image_size=size, overwrite=True)
    df, _ = index_archive(root / "arc", root / "arc" / "labels.csv", salt="bench", workers=2,
                          unit="series" if dims == 3 else "image")
    return df


def data_wait_pct(info: dict, with_decode_s: float) -> float:
    """Data waiting on the retrain (the second run over the data: the base run filled the cache), in % of step time.

    Waiting = everything train() did outside train_model (reading the cached images, the split, saving: an upper
    bound on loading) + the in-loop waits for a batch; step time = the optimiser steps' compute (issue 12: < 10 %).
    """
    history = info["history"]
    load_s = max(0.0, with_decode_s - info["wall_time_s"])
    wait_s = sum(e["data_wait_s"] for e in history)
    return round(100.0 * (load_s + wait_s) / sum(e["step_s"] for e in history), 1)


def prepared(root: Path, dims: int, n: int, args):
    """(cohort, base dir, base info, retrain info, retrain s with decoding): built and trained, or with --reuse read
    back from an earlier run's folder (the same archive, base and retrain; only the unlearning runs again)."""
    import pandas as pd

    rule = build_rule(device="ScannerX")
    saved = root / "prepared.pkl"  # the index and both trainings' info, written once both trainings finished
    if args.reuse and saved.exists():
        df, base_info, retrain_info, retrain_cli_s = pd.read_pickle(saved)
        return df, root / "base", base_info, retrain_info, retrain_cli_s, rule
    df = build(root, dims, n, args.image_size, args.seed)
    opts = {"epochs": args.epochs, "batch_size": args.batch_size, "image_size": args.image_size, "seed": args.seed,
            "overwrite": True, "cache_dir": root / "cache"}
    base, base_info = train(df, root / "base", **opts)
    t0 = time.perf_counter()
    _, retrain_info = train(df, root / "retrain", rule=rule, exclude=True, **opts)
    retrain_cli_s = time.perf_counter() - t0
    pd.to_pickle((df, base_info, retrain_info, retrain_cli_s), saved)
    return df, base, base_info, retrain_info, retrain_cli_s, rule


def run_size(root: Path, dims: int, n: int, args) -> list[dict]:
    df, base, base_info, retrain_info, retrain_cli_s, rule = prepared(root, dims, n, args)
    base_val_acc = base_info["best_val_acc"]  # a base model at chance makes every verdict below meaningless
    # retrain_cli_s: including decoding (from the cache after the base run); unknown when reused
    wait_pct = data_wait_pct(retrain_info, retrain_cli_s) if retrain_cli_s else None
    rows = []
    for method in [] if args.prepare_only else args.methods:
        _, m = forget(df, base, rule, root / f"{method}-s{args.unlearn_seed}", method=method, reference=root / "retrain",
                      seed=args.unlearn_seed, overwrite=True, overrides=args.overrides or None)
        acc = m.get("acceptance") or {}
        rows.append({"dims": dims, "images": len(df), "method": method, "unlearn_seed": args.unlearn_seed,
                     "set": " ".join(args.sets), "kept": m.get("method", method),
                     "retrain_s": round(retrain_info["wall_time_s"], 2),
                     "retrain_with_decode_s": round(retrain_cli_s, 2), "unlearn_s": round(m["wall_time_s"], 2),
                     "rte": round(m["rte"], 2) if m.get("rte") else None,
                     # image passes (unlearn/cost.py): the retrain's forward-equivalents / every auto candidate's
                     "rte_compute": round(m["rte_compute"], 2) if m.get("rte_compute") else None,
                     "unlearn_fwd_equiv": (acc.get("cost_chain") or {}).get("forward_equivalents"),
                     "retrain_fwd_equiv": (retrain_info.get("cost") or {}).get("forward_equivalents"),
                     "met": bool(acc.get("met")),
                     "val_retain_conf": (acc.get("selectivity") or {}).get("retain_confidence"),
                     "val_retain_conf_original": (acc.get("selectivity") or {}).get("retain_confidence_original"),
                     "test_retain_conf": m.get("test_retain_confidence"),
                     "test_forget_acc": round(m["test_forget_acc"], 1), "test_retain_acc": round(m["test_retain_acc"], 1),
                     "base_val_acc": round(base_val_acc, 1), "retrain_data_wait_pct": wait_pct})
        print("  ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows}):
        pts = [r for r in rows if r["method"] == method and r["rte"]]
        ax.plot([r["images"] for r in pts], [r["rte"] for r in pts], marker="o", label=method)
        for r in pts:
            ax.annotate("met" if r["met"] else "not met", (r["images"], r["rte"]), fontsize=7)
    ax.axhline(50, ls="--", c="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("archive size (images or volumes)")
    ax.set_ylabel("RTE = retrain s / unlearn s")
    ax.set_title(f"RTE vs archive size ({rows[0]['dims']}D SYNTHETIC cohort)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, default=2, choices=[2, 3])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--methods", nargs="+", default=["psg", "famr"],
                    help="unlearning methods, or auto (forget's default chain; `kept` names the candidate it kept, "
                         "and the unlearning time counts every attempt)")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: 8 for 2D, 30 for 3D)")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch (default: 64 for 2D, 8 for 3D)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unlearn-seed", type=int, default=None, help="forget's seed (default: --seed)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a method setting for every run (forget --set)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the archive, base and retrain an earlier run left in --out (only unlearning runs)")
    ap.add_argument("--prepare-only", action="store_true", help="build and train, unlearn nothing")
    ap.add_argument("--out", type=Path, default=Path("rte-bench"))
    args = ap.parse_args()
    args.unlearn_seed = args.seed if args.unlearn_seed is None else args.unlearn_seed
    args.overrides = dict(kv.split("=", 1) for kv in args.sets)
    args.image_size = args.image_size or (48 if args.dims == 2 else 24)
    # `train`'s recipe per dimensionality (DEFAULT_RECIPE: where the 3D one came from is said there)
    args.epochs = args.epochs or DEFAULT_RECIPE[args.dims]["epochs"]
    args.batch_size = args.batch_size or DEFAULT_RECIPE[args.dims]["batch_size"]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        rows += run_size(args.out / f"n{n}", args.dims, n, args)
    if not rows:
        return
    with open(args.out / "rte.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, args.out / "rte.png")
    print(f"\n{'dims':>4} {'images':>7} {'method':>6} {'retrain s':>10} {'unlearn s':>10} {'RTE':>7} {'RTE cmp':>7} "
          f"{'met':>5} {'data wait %':>11}")
    for r in rows:
        print(f"{r['dims']:>4} {r['images']:>7} {r['method']:>6} {r['retrain_s'] or '-':>10} {r['unlearn_s']:>10} "
              f"{'-' if r['rte'] is None else r['rte']:>7} {'-' if r['rte_compute'] is None else r['rte_compute']:>7} "
              f"{str(r['met']):>5} {str(r['retrain_data_wait_pct']):>11}")
    print(f"wrote {args.out / 'rte.csv'} and {args.out / 'rte.png'} (SYNTHETIC data)")


if __name__ == "__main__":
    main()
