"""Frozen-prefix caching: an exact shortcut for methods that update only a model's last blocks.

When a method trains only the parameters of the last blocks of a Classifier and keeps BatchNorm and dropout
in eval mode (FAMR with params="last-N" or "head"), every feature block before the first trained one is a
fixed function of the image. Its outputs are computed once per row, and the whole run (the method's steps,
the controller's checks, retain repair, the teacher) works on the remaining blocks only. The result is the
same model as without the cache, up to float rounding; only the time differs.

Only the rows a run reads are encoded, each the first time it is read (the controller's probes read at most
`max_eval` validation rows, retain repair a few batches of a train_retain that can hold 50k rows). The test
parts are left empty (neither a method nor the controller may read them).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.models.zoo import Classifier
from medunlearn.unlearn.cost import flop_share, weigh_passes

ENCODE_BATCH = 256


def frozen_prefix_length(model: Classifier, trained: set[str]) -> int:
    """Number of leading feature blocks holding no trained parameter (0: nothing to cache)."""
    for i, (name, block) in enumerate(model.features.named_children()):
        if any(f"features.{name}.{n}" in trained for n, _ in block.named_parameters()):
            return i
    return len(model.features)


def split_model(model: Classifier, i: int, sample: torch.Tensor | None = None) -> tuple[nn.Sequential, Classifier]:
    """(prefix, suffix) views of `model` that share its modules: training the suffix trains `model`.

    With `sample` (a batch of input images, one row is enough), each view's passes count its share of the whole
    model's FLOPs (unlearn/cost.py), so a run on cached prefix outputs is charged what it computes."""
    children = list(model.features.named_children())
    prefix = nn.Sequential(OrderedDict(children[:i])).eval()
    suffix = Classifier(nn.Sequential(OrderedDict(children[i:])), model.head, model.arch)
    if sample is not None:
        with torch.no_grad():
            share = flop_share(suffix, prefix(sample), model, sample)
        weigh_passes(suffix, share)
        if share < 1.0:
            weigh_passes(prefix, 1.0 - share)
    return prefix, suffix


@torch.no_grad()
def encode(prefix: nn.Module, s: ImageSet, device: torch.device) -> ImageSet:
    """The prefix's outputs for every row of `s` (labels and metadata kept), on the CPU like the images."""
    if len(s) == 0:
        return s
    out = [prefix(s.images[j:j + ENCODE_BATCH].to(device)).float().cpu() for j in range(0, len(s), ENCODE_BATCH)]
    return ImageSet(torch.cat(out), s.labels, s.meta)


class EncodedRows(ImageSet):
    """`source` seen through a frozen prefix, each row encoded the first time it is read and kept.

    Batches (`loader`) and `subset` encode only the rows they return; `images` encodes every row."""

    def __init__(self, source: ImageSet, prefix: nn.Module, device: torch.device) -> None:  # noqa: D107
        self._source, self._prefix, self._device = source, prefix, device
        self.labels, self.meta = source.labels, source.meta
        self._memo: torch.Tensor | None = None
        self._done = torch.zeros(len(source), dtype=torch.bool)

    @property
    def images(self) -> torch.Tensor:
        return self.rows(torch.arange(len(self)))

    @images.setter
    def images(self, value: torch.Tensor) -> None:  # ImageSet's field is writeable; these rows are read-only
        raise AttributeError("EncodedRows.images is read-only (computed from the source rows)")

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long)
        todo = idx[~self._done[idx]].unique()
        if len(todo):
            new = encode(self._prefix, self._source.subset(todo), self._device).images
            if self._memo is None:
                self._memo = new.new_empty((len(self), *new.shape[1:]))
            self._memo[todo], self._done[todo] = new, True
        return self._memo[idx] if self._memo is not None else self._source.images[idx]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        return self.rows(torch.as_tensor(index, dtype=torch.long))

    def subset(self, index: torch.Tensor | list[int]) -> ImageSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.rows(idx), self.labels[idx], self.meta.iloc[idx.numpy()].reset_index(drop=True))

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False) -> DataLoader:
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(_EncodedDataset(self), batch_size=batch_size, shuffle=shuffle, generator=gen,
                          drop_last=drop_last, collate_fn=_as_is)


def _as_is(batch: Any) -> Any:  # __getitems__ returns a whole batch (a dict, not the list DataLoader expects)
    return batch


class _EncodedDataset(Dataset):
    def __init__(self, rows: EncodedRows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, idx: list[int]) -> dict:
        t = torch.as_tensor(idx)
        return {"image": self.rows.rows(t), "label": self.rows.labels[t]}


def _empty_like(s: ImageSet, template: torch.Tensor) -> ImageSet:
    if not isinstance(s, ImageSet):  # tune's sealed test split (tune/sealed.py): stays sealed, is never read
        return s
    return ImageSet(template.new_zeros((0, *template.shape[1:])), s.labels[:0], s.meta.iloc[:0])


def encode_split(prefix: nn.Module, data: SplitData, device: torch.device) -> SplitData:
    """`data` with its train and val parts seen through the prefix (EncodedRows) and its test parts emptied."""
    train_forget, train_retain, val_forget, val_retain = (
        EncodedRows(s, prefix, device)
        for s in (data.train_forget, data.train_retain, data.val_forget, data.val_retain))
    template = train_forget.subset([0]).images if len(data.train_forget) else data.train_forget.images
    return dataclasses.replace(data, train_forget=train_forget, train_retain=train_retain, val_forget=val_forget,
                               val_retain=val_retain, test_forget=_empty_like(data.test_forget, template),
                               test_retain=_empty_like(data.test_retain, template),
                               info={**data.info, "prefix_cached": True})
