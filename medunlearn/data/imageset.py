"""In-memory image tensors for the training / unlearning / evaluation loops.

Cohort rows are decoded once through the MONAI pipeline (`medunlearn.data.datasets`) and held as
tensors here, so the hot loops never touch the disk. Pixel space convention (used by PSG's ε-ball):
float32 in [0, 1], shape (N, C, H, W) — or (N, C, D, H, W) for volumes; models normalise internally.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset


@dataclass
class ImageSet:
    """A set of images with labels and per-image metadata rows.

    images: (N, C, H, W) float32 in [0, 1]; labels: (N,) int64 class indices;
    meta: N rows, at least columns image_id, patient, device, site (pseudonymised ids only).
    """

    images: torch.Tensor
    labels: torch.Tensor
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"Expected as many labels as images, but got {len(self.labels)} and {len(self.images)}")
        if len(self.meta) == 0 and len(self.images) > 0:
            self.meta = pd.DataFrame({"image_id": [str(i) for i in range(len(self.images))]})
        self.meta = self.meta.reset_index(drop=True)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """The images of these rows only (a lazily encoded set, unlearn/prefix.EncodedRows, encodes just them;
        `images[index]` would encode and copy every row first)."""
        return self.images[torch.as_tensor(index, dtype=torch.long)]

    def subset(self, index: torch.Tensor | list[int]) -> ImageSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx], self.meta.iloc[idx.numpy()].reset_index(drop=True))

    @staticmethod
    def concat(sets: list[ImageSet]) -> ImageSet:
        sets = [s for s in sets if len(s) > 0] or sets[:1]
        return ImageSet(
            torch.cat([s.images for s in sets]),
            torch.cat([s.labels for s in sets]),
            pd.concat([s.meta for s in sets], ignore_index=True),
        )

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False) -> DataLoader:
        """Batches of dicts {"image": (B,C,H,W), "label": (B,)} (MONAI's dictionary convention)."""
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(
            _TensorDictDataset(self.images, self.labels), batch_size=batch_size, shuffle=shuffle,
            generator=gen, drop_last=drop_last, collate_fn=_identity,
        )


def _identity(batch):  # __getitems__ already returns a collated batch
    return batch


class _TensorDictDataset(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i]}

    def __getitems__(self, idx: list[int]) -> dict:
        t = torch.as_tensor(idx)
        return {"image": self.images[t], "label": self.labels[t]}


@dataclass
class SplitData:
    """Everything a train / unlearn / evaluate step needs for one forget policy.

    train_forget = train rows matching the forget rule (D_f); train_retain = the other train rows (D_r);
    val_* and test_* are held-out patients, split the same way by the rule.
    """

    class_names: list[str]
    train_retain: ImageSet
    train_forget: ImageSet
    val_retain: ImageSet
    val_forget: ImageSet
    test_retain: ImageSet
    test_forget: ImageSet
    info: dict = field(default_factory=dict)  # rule text, seed, split hash, cohort hash, counts

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train(self) -> ImageSet:
        return ImageSet.concat([self.train_retain, self.train_forget])

    @property
    def val(self) -> ImageSet:
        return ImageSet.concat([self.val_retain, self.val_forget])

    @property
    def test(self) -> ImageSet:
        return ImageSet.concat([self.test_retain, self.test_forget])

    @property
    def in_shape(self) -> tuple[int, ...]:
        """(C, H, W) for images, (C, D, H, W) for volumes."""
        return tuple(self.train_retain.images.shape[1:])

    @property
    def spatial_dims(self) -> int:
        return len(self.in_shape) - 1
