"""Shared tiny fixtures. Keep everything here CPU-fast (seconds)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import pytest
import torch

from medunlearn.data.imageset import ImageSet, SplitData

torch.set_num_threads(1)


def make_tiny_images(n: int, num_classes: int, size: int, seed: int, device_id: int) -> ImageSet:
    """Images whose class is a bright quadrant pattern, plus a device-specific intensity offset and noise.

    Learnable by a tiny CNN in a few epochs; device 3 ("ScannerX") adds a marker stripe (a shortcut).
    """
    g = np.random.default_rng(seed)
    labels = g.integers(0, num_classes, size=n)
    imgs = g.normal(0.3, 0.08, size=(n, 1, size, size)).astype(np.float32)
    h = size // 2
    for i, y in enumerate(labels):
        r, c = divmod(int(y) % 4, 2)
        imgs[i, 0, r * h:(r + 1) * h, c * h:(c + 1) * h] += 0.45
    imgs += 0.05 * device_id
    if device_id == 3:
        imgs[:, 0, :2, :] = 0.95
    imgs = np.clip(imgs, 0.0, 1.0)
    patients = [f"p{seed}_{i // 3}" for i in range(n)]
    devices = ["ScannerA", "ScannerB", "ScannerC", "ScannerX"]
    meta = pd.DataFrame({
        "image_id": [f"img{seed}_{i}" for i in range(n)],
        "patient": patients,
        "device": devices[device_id],
        "site": ["SiteA", "SiteB", "SiteC", "SiteB"][device_id],
    })
    return ImageSet(torch.from_numpy(imgs), torch.from_numpy(labels.astype(np.int64)), meta)


def make_tiny_split(num_classes: int = 3, size: int = 16, n_train: int = 240, seed: int = 0) -> SplitData:
    """A four-device problem; the forget set is device ScannerX (a quarter of the data)."""

    def part(n: int, s: int, forget: bool) -> ImageSet:
        if forget:
            return make_tiny_images(n // 4, num_classes, size, seed * 100 + s, 3)
        sets = [make_tiny_images(n // 4, num_classes, size, seed * 100 + s + 10 * d, d) for d in range(3)]
        return ImageSet.concat(sets)

    return SplitData(
        class_names=[f"class{k}" for k in range(num_classes)],
        train_retain=part(n_train, 1, False), train_forget=part(n_train, 2, True),
        val_retain=part(n_train // 2, 3, False), val_forget=part(n_train // 2, 4, True),
        test_retain=part(n_train // 2, 5, False), test_forget=part(n_train // 2, 6, True),
        info={"rule": "device = ScannerX", "seed": seed, "synthetic": True},
    )


@pytest.fixture
def tiny_split() -> SplitData:
    return make_tiny_split()
