"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (gzipped IDX files).

IDX layout (big-endian): magic int32 (0x00000803 = 2051 for ubyte images with 3 dims, 0x00000801 = 2049
for ubyte labels with 1 dim), then one int32 per dim, then the raw bytes. Every header is checked
(magic, counts, dims, byte length) so a truncated or swapped file fails loudly instead of training on junk.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medunlearn.data.imageset import ImageSet
from medunlearn.errors import DataError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "MEDUNLEARN_FASHION_MNIST_DIR"
INSTALL_HINT = "install it with `apt-get install -y dataset-fashion-mnist` or pass --data-dir"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
CLASS_NAMES: tuple[str, ...] = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                                "bag", "ankle-boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def resolve_dir(data_dir: str | Path | None = None) -> Path:
    """The data folder: `data_dir`, else $MEDUNLEARN_FASHION_MNIST_DIR, else the Debian install path."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _read_gz(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"Expected the Fashion-MNIST file {path}, but it does not exist; {INSTALL_HINT}.")
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"Expected a gzip IDX file at {path}, but it is corrupt ({exc}).") from exc


def parse_idx(raw: bytes, magic: int, name: str = "IDX") -> np.ndarray:
    """Decode an unsigned-byte IDX buffer whose magic must equal `magic`; returns uint8 (N, ...) array."""
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"Expected an IDX header of {4 + 4 * ndim} bytes in {name}, but the file has {len(raw)} bytes.")
    got = struct.unpack(">i", raw[:4])[0]
    if got != magic:
        raise DataError(f"Expected IDX magic number {magic} in {name}, but got {got}.")
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if any(d < 0 for d in dims) or len(body) != int(np.prod(dims)):
        raise DataError(f"Expected {int(np.prod(dims))} data bytes for dims {dims} in {name}, but got {len(body)}.")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def load_part(data_dir: Path, part: str) -> ImageSet:
    """One part ('train' or 't10k' as 'test') as an ImageSet: images (N,1,28,28) float32 in [0,1]."""
    img_name, lab_name = FILES[part]
    images = parse_idx(_read_gz(data_dir / img_name), IMAGES_MAGIC, img_name)
    labels = parse_idx(_read_gz(data_dir / lab_name), LABELS_MAGIC, lab_name)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"Expected 28x28 images in {img_name}, but got dims {images.shape[1:]}.")
    if len(images) != len(labels):
        raise DataError(f"Expected as many labels as images in {part}, but got {len(labels)} and {len(images)}.")
    if len(labels) and int(labels.max()) >= len(CLASS_NAMES):
        raise DataError(f"Expected labels 0..{len(CLASS_NAMES) - 1} in {lab_name}, but got {int(labels.max())}.")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    meta = pd.DataFrame({"image_id": [f"{part}{i}" for i in range(len(labels))], "patient": "",
                         "device": "fashion-mnist", "site": ""})
    return ImageSet(x, torch.from_numpy(labels.astype(np.int64)), meta)


def load_fashion_mnist(data_dir: str | Path | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) ImageSets: 60,000 and 10,000 images (N, 1, 28, 28) in [0, 1], labels 0..9."""
    root = resolve_dir(data_dir)
    if not root.is_dir():
        raise DataError(f"Expected the Fashion-MNIST folder {root}, but it does not exist; {INSTALL_HINT}.")
    return load_part(root, "train"), load_part(root, "test")
