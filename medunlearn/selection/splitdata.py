"""Cohort table + forget rule → SplitData (image tensors per split × forget/retain).

It lives in ``forget`` (not ``data``) because it applies the selection: ``forget`` sits above ``data``.

The images are decoded once for all kept rows (through ``data.datasets.load_images`` unless a ``loader``
with the same signature is injected) and then sliced into the six parts.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from medunlearn.data.columns import text_values
from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.errors import DataError
from medunlearn.registry import did_you_mean
from medunlearn.selection.rules import Rule
from medunlearn.selection.split import DEFAULT_FRACTIONS, PARTS, select

META_COLUMNS = ("image_id", "patient", "device", "site", "manufacturer", "label", "study_date")
# loader(df, class_names, image_size, progress=False) -> (images (N,1,S,S) or volumes (N,1,S,S,S) float32 in
# [0,1], labels (N,) int64)
Loader = Callable[..., tuple]


def _check_class_names(labels: pd.Series, class_names: list[str]) -> None:
    for lab in sorted(set(labels)):
        if lab not in class_names:
            raise DataError(f"Expected labels among class_names {class_names}, but got {lab!r}."
                            f"{did_you_mean(lab, class_names)}")


def build_split_data(df: pd.DataFrame, rule: Rule | None, seed: int = 0, image_size: int = 64,
                     fractions: Sequence[float] = DEFAULT_FRACTIONS, loader: Loader | None = None,
                     class_names: Sequence[str] | None = None, drop_unlabelled: bool = True,
                     membership: dict[str, str] | None = None) -> SplitData:
    """Select (patient-level split + forget mask) and materialise the six image sets.

    Returns SplitData whose ImageSets hold images (n, 1, S, S) float32 in [0, 1], labels (n,) int64 and meta
    rows (image_id, patient, device, site, manufacturer, label, study_date; pseudonymised ids only).
    info = {rule (text), rule_spec (to_dict), seed, fractions, split_hash, train_hash (rule-free),
    cohort_hash, counts, class_names, image_size}.
    """
    sel = select(df, rule, seed=seed, fractions=fractions, drop_unlabelled=drop_unlabelled, membership=membership)
    frame = sel.frame
    labels_text = text_values(frame["label"])
    names = list(class_names) if class_names is not None else sorted(set(labels_text))
    _check_class_names(labels_text, names)
    if loader is None:
        from medunlearn.data.datasets import load_images  # heavy (MONAI); imported only when images are needed

        loader = load_images
    images, labels = loader(frame, names, image_size, progress=False)
    images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images, dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels, dtype=torch.int64)
    if images.ndim not in (4, 5) or len(images) != len(frame) or len(labels) != len(frame):
        raise DataError(f"Expected the image loader to return ({len(frame)}, C, H, W) images or ({len(frame)}, C, "
                        f"D, H, W) volumes and {len(frame)} "
                        f"labels, but got {tuple(images.shape)} and {tuple(labels.shape)}.")
    expected = torch.as_tensor([names.index(v) for v in labels_text], dtype=torch.int64)
    if not torch.equal(labels, expected):
        raise DataError("Expected the image loader's labels to follow class_names order, but they differ.")
    meta = pd.DataFrame({c: (text_values(frame[c]) if c in frame.columns else "") for c in META_COLUMNS},
                        index=frame.index).reset_index(drop=True)
    position = pd.Series(np.arange(len(frame)), index=frame.index)
    sets = {}
    for p in PARTS:
        idx = torch.as_tensor(position.loc[sel.part(p)].to_numpy().copy(), dtype=torch.long)
        sets[p] = ImageSet(images[idx], labels[idx], meta.iloc[idx.numpy()].reset_index(drop=True))
    from medunlearn.data.cohort import cohort_hash  # lazy: pulls in the DICOM/NIfTI readers

    info = {"rule": sel.rule.describe(), "rule_spec": sel.rule.to_dict(), "seed": seed,
            "fractions": list(sel.fractions), "split_hash": sel.split_hash, "train_hash": sel.train_hash,
            "cohort_hash": cohort_hash(df),
            "counts": sel.counts, "class_names": names, "image_size": image_size, "spatial_dims": images.ndim - 2,
            "split_source": sel.split_source}
    return SplitData(class_names=names, info=info, **sets)
