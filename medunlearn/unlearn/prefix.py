"""Frozen-prefix caching: an exact shortcut for methods that update only a model's last blocks.

When a method trains only the parameters of the last blocks of a Classifier and keeps BatchNorm and dropout
in eval mode (FAMR with params="last-N" or "head"), every feature block before the first trained one is a
fixed function of the image. Its outputs are computed once per row, and the whole run (the method's steps,
the controller's checks, retain repair, the teacher) works on the remaining blocks only. The result is the
same model as without the cache, up to float rounding; only the time differs.

Only the rows a run reads are encoded: train_forget, train_retain, val_forget, val_retain. The test parts
are left empty (neither a method nor the controller may read them).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict

import torch
from torch import nn

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.models.zoo import Classifier

ENCODE_BATCH = 256


def frozen_prefix_length(model: Classifier, trained: set[str]) -> int:
    """Number of leading feature blocks holding no trained parameter (0: nothing to cache)."""
    for i, (name, block) in enumerate(model.features.named_children()):
        if any(f"features.{name}.{n}" in trained for n, _ in block.named_parameters()):
            return i
    return len(model.features)


def split_model(model: Classifier, i: int) -> tuple[nn.Sequential, Classifier]:
    """(prefix, suffix) views of `model` that share its modules: training the suffix trains `model`."""
    children = list(model.features.named_children())
    prefix = nn.Sequential(OrderedDict(children[:i]))
    suffix = Classifier(nn.Sequential(OrderedDict(children[i:])), model.head, model.arch)
    return prefix.eval(), suffix


@torch.no_grad()
def encode(prefix: nn.Module, s: ImageSet, device: torch.device) -> ImageSet:
    """The prefix's outputs for every row of `s` (labels and metadata kept), on the CPU like the images."""
    if len(s) == 0:
        return s
    out = [prefix(s.images[j:j + ENCODE_BATCH].to(device)).float().cpu() for j in range(0, len(s), ENCODE_BATCH)]
    return ImageSet(torch.cat(out), s.labels, s.meta)


def _empty_like(s: ImageSet, template: torch.Tensor) -> ImageSet:
    return ImageSet(template.new_zeros((0, *template.shape[1:])), s.labels[:0], s.meta.iloc[:0])


def encode_split(prefix: nn.Module, data: SplitData, device: torch.device) -> SplitData:
    """`data` with its train and val parts replaced by prefix outputs and its test parts emptied."""
    parts = {k: encode(prefix, getattr(data, k), device)
             for k in ("train_forget", "train_retain", "val_forget", "val_retain")}
    template = parts["train_forget"].images
    tests = {k: _empty_like(getattr(data, k), template) for k in ("test_forget", "test_retain")}
    return dataclasses.replace(data, **parts, **tests, info={**data.info, "prefix_cached": True})
