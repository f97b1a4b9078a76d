"""Does 2-process DDP training (torchrun, gloo) beat one process on this machine's cores? (issue 12)

Builds a SYNTHETIC 2D cohort of about --images images (or reuses --out/cohort.csv), fills the decoded-image
cache once, then trains the same base model --repeats times each way through the real CLI:
  one process   `medunlearn train ...`                                   OMP_NUM_THREADS = --cores
  two processes `torchrun --standalone --nproc-per-node 2 -m medunlearn.cli.main train ...`
                                                                         OMP_NUM_THREADS = --cores / 2 each
Both see the same global batches (DDP slices each global batch across ranks; README "torchrun"). Prints the
training-loop time (meta.json wall_time_s) and the whole command's wall time, mean ± std over the repeats,
and the speed-up. A measurement, not a test.

    nice -n 5 python benchmarks/ddp_train_speed.py --images 5000 --epochs 2 --repeats 3 --out ddp-bench
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def build_cohort(out: Path, images: int, seed: int) -> Path:
    from medunlearn.data.cohort import index_archive, write_cohort
    from medunlearn.data.synthetic import synthesize_cohort

    cohort = out / "cohort.csv"
    if not cohort.is_file():
        synthesize_cohort(out / "arc", n_patients=max(12, round(images / 4.5)), seed=seed, image_size=64,
                          overwrite=True)
        df, _ = index_archive(out / "arc", out / "arc" / "labels.csv", salt="bench", workers=2)
        write_cohort(df, cohort, overwrite=True)
    return cohort


def train_once(out: Path, cohort: Path, procs: int, threads: int, args, tag: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    cli = ["-m", "medunlearn.cli.main", "train", "--cohort", str(cohort), "--out", str(out / tag), "--overwrite",
           "--model", "allcnn", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--image-size", str(args.image_size), "--seed", str(args.seed), "--cache-dir", str(out / "cache")]
    cmd = [sys.executable, *cli] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *cli]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{tag} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    meta = json.loads((out / tag / "meta.json").read_text())
    return {"train_s": meta["wall_time_s"], "wall_s": wall, "world_size": meta["training"].get("world_size", 1),
            "val_acc": max(e["val_acc"] for e in meta["training"]["history"])}


def main() -> None:
    from medunlearn.benchmarking.tables import format_stat, mean_std

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64, help="global batch (split across ranks under DDP)")
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("ddp-bench"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cohort = build_cohort(args.out, args.images, args.seed)
    train_once(args.out, cohort, 1, args.cores, args, "warm")  # fills the cache: later runs decode nothing
    modes = [("1 process", 1, args.cores), ("2 processes (DDP)", 2, max(1, args.cores // 2))]
    results: dict[str, list[dict]] = {name: [] for name, _, _ in modes}
    for r in range(args.repeats):  # interleaved, so drift in machine load hits both modes alike
        for name, procs, threads in modes:
            results[name].append(train_once(args.out, cohort, procs, threads, args, f"p{procs}_r{r}"))
            print(f"repeat {r} {name}: {results[name][-1]}", flush=True)
    base = statistics.mean(x["train_s"] for x in results[modes[0][0]])
    print(f"\n{'mode':<20} {'threads/proc':>12} {'train-loop s':>14} {'command s':>14} {'speed-up':>9} {'val acc':>8}")
    for name, _procs, threads in modes:
        rows = results[name]
        mean = statistics.mean(x["train_s"] for x in rows)
        print(f"{name:<20} {threads:>12} {format_stat(mean_std([x['train_s'] for x in rows])):>14} "
              f"{format_stat(mean_std([x['wall_s'] for x in rows])):>14} {base / mean:>8.2f}x "
              f"{statistics.mean(x['val_acc'] for x in rows):>8.1f}")
    print(f"(SYNTHETIC cohort, {args.epochs} epochs at global batch {args.batch_size}, {args.cores} cores, "
          f"{args.repeats} repeats)")


if __name__ == "__main__":
    main()
