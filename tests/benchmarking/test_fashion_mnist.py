from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from medunlearn.benchmarking.fashion_mnist import FILES, load_fashion_mnist, parse_idx
from medunlearn.errors import DataError
from tests.benchmarking.conftest import idx_bytes


def test_loads_images_in_unit_range(fake_fashion):
    train, test = load_fashion_mnist(fake_fashion)
    assert train.images.shape == (240, 1, 28, 28) and test.images.shape == (60, 1, 28, 28)
    assert train.images.dtype == torch.float32
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) == pytest.approx(230 / 255)
    assert sorted(torch.unique(train.labels).tolist()) == list(range(10))


def test_env_var_selects_folder(fake_fashion, monkeypatch):
    monkeypatch.setenv("MEDUNLEARN_FASHION_MNIST_DIR", str(fake_fashion))
    train, _ = load_fashion_mnist()
    assert len(train) == 240


def test_missing_folder_names_install_command(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nope")


def test_missing_file_names_install_command(fake_fashion):
    (fake_fashion / FILES["test"][1]).unlink()
    with pytest.raises(DataError, match="t10k-labels.*apt-get install"):
        load_fashion_mnist(fake_fashion)


def test_wrong_magic_rejected():
    raw = idx_bytes(np.zeros((30,), np.uint8), 2049)
    with pytest.raises(DataError, match="magic number 2051.*got 2049"):
        parse_idx(raw, 2051)


def test_truncated_body_rejected():
    raw = idx_bytes(np.zeros((4, 28, 28), np.uint8), 2051)[:-10]
    with pytest.raises(DataError, match="3136 data bytes"):
        parse_idx(raw, 2051)


def test_count_mismatch_rejected(fake_fashion):
    (fake_fashion / FILES["train"][1]).write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8), 2049)))
    with pytest.raises(DataError, match="as many labels as images"):
        load_fashion_mnist(fake_fashion)


def test_corrupt_gzip_rejected(fake_fashion):
    (fake_fashion / FILES["train"][0]).write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt"):
        load_fashion_mnist(fake_fashion)


def test_wrong_dims_rejected(fake_fashion):
    (fake_fashion / FILES["test"][0]).write_bytes(gzip.compress(idx_bytes(np.zeros((60, 32, 32), np.uint8), 2051)))
    with pytest.raises(DataError, match="28x28"):
        load_fashion_mnist(fake_fashion)
