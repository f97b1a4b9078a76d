"""Decoding speed: MONAI's PydicomReader against medunlearn's PrunedPydicomReader on the same SYNTHETIC archive.

    python benchmarks/decode_speed.py --files 5000 --repeats 3

Synthesises N DICOM files, indexes them, then decodes every row with `load_images` (the path `train`, `forget`
and `evaluate` use) under each reader in turn, `--repeats` rounds interleaved so both see the same machine load.
Prints seconds per round, images/s and whether the two readers give the same pixels (they must).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.data import PydicomReader

from medunlearn.data import datasets
from medunlearn.data.cohort import index_archive
from medunlearn.data.dicom_reader import PrunedPydicomReader
from medunlearn.data.synthetic import synthesize_cohort

READERS = {"monai PydicomReader": PydicomReader, "PrunedPydicomReader": PrunedPydicomReader}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=5000, help="approximate number of DICOM files")
    ap.add_argument("--image-size", type=int, default=64, help="synthetic image side (pixels)")
    ap.add_argument("--load-size", type=int, default=48, help="the size load_images resizes to")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="medunlearn-bench-") as tmp:
        out = Path(tmp) / "cohort"
        summary = synthesize_cohort(out, n_patients=max(1, args.files // 10), seed=0, image_size=args.image_size,
                                    images_per_patient=(10, 10))
        df, _ = index_archive(out, out / "labels.csv", salt="bench", workers=1)
        names = sorted(df["label"].unique())
        times: dict[str, list[float]] = {k: [] for k in READERS}
        pixels: dict[str, torch.Tensor] = {}
        original = datasets.PrunedPydicomReader
        try:
            for _ in range(args.repeats):
                for name, cls in READERS.items():
                    datasets.PrunedPydicomReader = cls  # the reader LoadMiddleSliced builds
                    t0 = time.perf_counter()
                    x, _ = datasets.load_images(df, names, args.load_size)
                    times[name].append(time.perf_counter() - t0)
                    pixels.setdefault(name, x)
        finally:
            datasets.PrunedPydicomReader = original
        n = summary["n_images"]
        print(f"{n} SYNTHETIC DICOM files, {args.image_size} px, decoded to {args.load_size} px, {args.repeats} rounds")
        print(f"{'reader':>22} {'seconds':>16} {'images/s':>9}")
        for name, ts in times.items():
            mean, std = statistics.mean(ts), statistics.pstdev(ts)
            print(f"{name:>22} {mean:>9.2f} ± {std:<5.2f} {n / mean:>9,.0f}")
        a, b = pixels.values()
        print("same pixels:", bool(torch.equal(a, b)))


if __name__ == "__main__":
    main()
