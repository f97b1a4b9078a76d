"""Header-indexing speed: synthesise N DICOM files, time index_archive per pool kind and worker count.

    python benchmarks/index_speed.py --files 5000 --workers 1 2

Prints a table (files, seconds, headers/s, workers, pool). Target: >= 1,000 headers/s on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from medunlearn.data.cohort import index_archive
from medunlearn.data.synthetic import synthesize_cohort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=5000, help="approximate number of DICOM files")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pools", nargs="+", default=["process", "thread"], choices=["process", "thread"])
    ap.add_argument("--image-size", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="medunlearn-bench-") as tmp:
        out = Path(tmp) / "cohort"
        t0 = time.perf_counter()
        summary = synthesize_cohort(out, n_patients=max(1, args.files // 10), seed=0, image_size=args.image_size,
                                    images_per_patient=(10, 10))
        t_syn = time.perf_counter() - t0
        n = summary["n_images"]
        print(f"synthesised {n} files in {t_syn:.2f} s ({n / t_syn:,.0f} files/s); cpu_count={os.cpu_count()}")
        index_archive(out, salt="bench", workers=1)  # warm the page cache so every run reads the same way
        print(f"{'files':>7} {'seconds':>8} {'headers/s':>10} {'workers':>8} {'pool':>8}")
        for pool in args.pools:
            for w in args.workers:
                t0 = time.perf_counter()
                df, rep = index_archive(out, out / "labels.csv", salt="bench", workers=w, pool=pool)
                dt = time.perf_counter() - t0
                assert rep["indexed"] == n and rep["labelled"] == n  # benchmark sanity, not user input
                print(f"{n:>7} {dt:>8.2f} {n / dt:>10,.0f} {w:>8} {pool:>8}")


if __name__ == "__main__":
    main()
