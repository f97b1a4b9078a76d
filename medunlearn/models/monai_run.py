"""Run a bundle under MONAI's own `python -m monai.bundle run` and compare its predictions with a checkpoint's.

This is the hand-back check of `export-bundle --like`: MONAI, not medunlearn, reads the exported bundle's configs
and weights, and its predictions.csv must equal what medunlearn computes for the same checkpoint. Unlike
`medunlearn adopt`, this DOES run the bundle's config as code (that is what MONAI does): call it only on a bundle
whose configs you trust, e.g. one exported from your own deployed bundle. The demo and the tests use it on bundles
they built themselves.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from medunlearn.errors import DataError

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")


def inference_config(bundle: Path) -> Path:
    for name in CONFIG_NAMES:
        if (bundle / "configs" / name).is_file():
            return bundle / "configs" / name
    raise DataError(f"Expected configs/inference.json or .yaml in {bundle.name}, but found neither.")


def run_bundle(bundle: str | Path, dataset_dir: str | Path, output_dir: str | Path, datalist_key: str = "test",
               timeout_s: float = 900) -> Path:
    """`python -m monai.bundle run` on `bundle` (its own configs), writing predictions.csv into `output_dir`."""
    bundle, output_dir = Path(bundle).resolve(), Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(inference_config(bundle)),
           "--bundle_root", str(bundle), "--dataset_dir", str(Path(dataset_dir).resolve()),
           "--output_dir", str(output_dir), "--datalist_key", datalist_key]
    try:
        res = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"Expected `monai.bundle run` on {bundle.name} to finish within {timeout_s:.0f} s, but it "
                        "did not.") from exc
    found = sorted(output_dir.rglob("*.csv"))
    if res.returncode != 0 or not found:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"Expected `monai.bundle run` on {bundle.name} to write predictions, but it exited "
                        f"{res.returncode}: {tail[0][:200]}")
    return found[0]


def compare_predictions(checkpoint: str | Path, predictions: str | Path, cohort: pd.DataFrame,
                        tolerance: float = 1e-4) -> dict[str, Any]:
    """The checkpoint's probabilities (medunlearn's loader and model) on the images MONAI predicted, against
    MONAI's predictions.csv, matched by resolved path: fidelity.agreement's record plus {"matched", "rows"}.
    Does not raise on a mismatch: the caller decides."""
    import torch

    from medunlearn.adopt.fidelity import adopted_probs, agreement, read_expected
    from medunlearn.data.datasets import load_images
    from medunlearn.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    names = list(meta["class_names"])
    expected = {str(Path(p).resolve()): v for p, v in read_expected(Path(predictions), len(names)).items()}
    resolved = [str(Path(p).resolve()) for p in cohort["path"]]
    keep = [r in expected for r in resolved]
    rows = cohort[keep]
    if rows.empty:
        raise DataError("Expected MONAI's predictions to name images of the cohort, but none matched by path.")
    images, _ = load_images(rows, names, int(meta["image_size"]), preprocessing=meta.get("preprocessing"))
    got = adopted_probs(model, images)
    want = torch.tensor([expected[r] for r, k in zip(resolved, keep) if k], dtype=got.dtype)
    return {**agreement(got, want, tolerance), "matched": int(len(rows)), "rows": len(expected)}
