"""Seal the test rows before a study sees the data: tuning reads train and validation rows only."""
from __future__ import annotations

import dataclasses
from typing import Any, cast

from medunlearn.data.imageset import ImageSet, SplitData


class SealedTestRows(RuntimeError):
    """Raised when anything touches a sealed test split during tuning (a bug: tuning must not see test rows)."""


class Sealed:
    """Stands in for test_retain / test_forget: any use (len, images, labels, meta, loader) raises."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_what", name)

    def __getattr__(self, attr: str) -> Any:
        raise SealedTestRows(f"tuning read {self._what}.{attr}; test rows are sealed during `medunlearn tune`")

    def __len__(self) -> int:
        raise SealedTestRows(f"tuning read len({self._what}); test rows are sealed during `medunlearn tune`")

    def __repr__(self) -> str:
        return f"Sealed({self._what})"


def validation_only(data: SplitData) -> SplitData:
    """A copy of `data` whose test splits are Sealed (their tensors are dropped, so nothing can read them)."""
    info = dict(data.info, tuning="test rows sealed: train_* and val_* only")
    return dataclasses.replace(data, test_retain=cast(ImageSet, Sealed("test_retain")),  # stands in for one
                               test_forget=cast(ImageSet, Sealed("test_forget")), info=info)
