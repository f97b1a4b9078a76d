"""A tiny fake Fashion-MNIST (gzipped IDX) and a tiny bench config for the bench tests."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from medunlearn.benchmarking.fashion_mnist import FILES


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">i", magic) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_fake_fashion(root: Path, n_train: int = 240, n_test: int = 60, seed: int = 0) -> Path:
    """Class k = a bright horizontal band at rows 2k..2k+5 plus noise: learnable in one epoch."""
    g = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        g.shuffle(labels)
        imgs = g.integers(0, 60, size=(n, 28, 28))
        for i, y in enumerate(labels):
            imgs[i, 2 * y:2 * y + 6, :] = 230
        img_name, lab_name = FILES[part]
        (root / img_name).write_bytes(gzip.compress(idx_bytes(imgs, 2051)))
        (root / lab_name).write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    return root


@pytest.fixture
def fake_fashion(tmp_path: Path) -> Path:
    return write_fake_fashion(tmp_path / "fmnist")


TINY_CONFIG = {
    "train": {"model": "small_cnn", "model_kwargs": {"width": 4}, "epochs": 1, "batch_size": 32, "lr": 0.05,
              "image_size": 28},
    "default_goals": ["suppression"],
    "quick": {"train": {"epochs": 1}, "methods": ["finetune"], "subset": 120},
    "methods": {"finetune": {"epochs": 0.5, "check_every": 1000},
                "neggrad": {"epochs": 0.5, "check_every": 1000}},
}


@pytest.fixture
def tiny_config() -> dict:
    import copy

    return copy.deepcopy(TINY_CONFIG)
