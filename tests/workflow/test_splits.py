"""split_data_for: one decode of a cohort serves several rules (a merge's policies and their union)."""
from __future__ import annotations

import pytest
import torch

from medunlearn.data import datasets
from medunlearn.data.cohort import index_archive
from medunlearn.data.synthetic import CLASS_NAMES, synthesize_cohort
from medunlearn.selection.rules import build_rule
from medunlearn.workflow.splits import split_data_for


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("splits") / "arc"
    synthesize_cohort(out, n_patients=24, seed=3, image_size=24)
    df, _ = index_archive(out, out / "labels.csv", salt="splits-test", workers=1)
    return df


def test_a_shared_memo_decodes_once_for_every_rule(cohort, monkeypatch):
    real, calls = datasets.load_images, []

    def counting(*a, **k):
        calls.append(len(a[0]))
        return real(*a, **k)

    monkeypatch.setattr(datasets, "load_images", counting)
    names, devices = list(CLASS_NAMES), cohort["device"].value_counts().index[:2]
    rules = [build_rule(device=[str(d)]) for d in devices]
    decoded: dict = {}
    shared = [split_data_for(cohort, r, 0, 16, class_names=names, decoded=decoded) for r in rules]
    assert len(calls) == 1  # the second rule re-sliced the first decode
    fresh = [split_data_for(cohort, r, 0, 16, class_names=names) for r in rules]
    assert len(calls) == 3
    for a, b in zip(shared, fresh):
        for part in ("train_forget", "train_retain", "val_forget", "val_retain"):
            assert torch.equal(getattr(a, part).images, getattr(b, part).images)
            assert list(getattr(a, part).meta["image_id"]) == list(getattr(b, part).meta["image_id"])
    split_data_for(cohort, rules[0], 0, 20, class_names=names, decoded=decoded)
    assert len(calls) == 4  # another size is another entry
