"""build_split_data: selection + one image load sliced into the six parts (fake loader)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medunlearn.errors import DataError
from medunlearn.selection.rules import build_rule
from medunlearn.selection.splitdata import build_split_data


def cohort(n_patients: int = 45) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        dev = ["ScannerA", "ScannerB", "ScannerX"][(p // 3) % 3]
        for k in range(2):
            rows.append({"image_id": f"img{p}_{k}", "path": f"/x/{p}_{k}.dcm", "label": ["cyst", "mass", "normal"][p % 3],
                         "patient": f"pat{p}", "device": dev, "site": "Site B" if dev == "ScannerX" else "Site A",
                         "manufacturer": "GE", "study_date": "2020-01-02", "measurement_mm": 30.0 + p})
    return pd.DataFrame(rows)


class FakeLoader:
    """Encodes the row number in pixel [0, 0] so slicing can be checked; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, df, class_names, image_size, progress=False):
        self.calls += 1
        n = len(df)
        images = np.zeros((n, 1, image_size, image_size), dtype=np.float32)
        images[:, 0, 0, 0] = np.arange(n) / 1000.0
        labels = np.array([class_names.index(v) for v in df["label"]], dtype=np.int64)
        self.frame = df.reset_index(drop=True)
        return images, labels


def test_build_split_data_with_fake_loader():
    df = cohort()
    loader = FakeLoader()
    data = build_split_data(df, build_rule(device="ScannerX"), seed=1, image_size=16, loader=loader)
    assert loader.calls == 1
    assert data.class_names == ["cyst", "mass", "normal"]
    assert data.in_shape == (1, 16, 16)
    total = sum(len(getattr(data, p)) for p in ("train_retain", "train_forget", "val_retain", "val_forget",
                                                 "test_retain", "test_forget"))
    assert total == len(df)
    assert (data.train_forget.meta.device == "ScannerX").all() and (data.test_retain.meta.device != "ScannerX").all()
    assert len(data.test_forget) > 0 and len(data.train_retain) > len(data.train_forget)
    # each image is the loader's image for the row named in its meta
    for part in (data.train_forget, data.val_retain, data.test_forget):
        rownum = torch.round(part.images[:, 0, 0, 0] * 1000).long().numpy()
        assert loader.frame.loc[rownum, "image_id"].tolist() == part.meta.image_id.tolist()
        assert part.labels.tolist() == [data.class_names.index(v) for v in part.meta.label]
    assert list(data.train_retain.meta.columns) == ["image_id", "patient", "device", "site", "manufacturer",
                                                    "label", "study_date"]
    assert set(data.train.meta.patient).isdisjoint(set(data.test.meta.patient))
    info = data.info
    assert info["rule"] == "device = ScannerX" and info["rule_spec"] == {"device": ["ScannerX"]}
    assert info["seed"] == 1 and info["class_names"] == data.class_names and len(info["split_hash"]) == 64
    assert info["counts"]["images"]["train"]["forget"] == len(data.train_forget)
    assert len(info["cohort_hash"]) == 64 and len(info["train_hash"]) == 64
    other = build_split_data(df, build_rule(site="Site A"), seed=1, image_size=8, loader=FakeLoader())
    assert other.info["train_hash"] == info["train_hash"] and other.info["split_hash"] != info["split_hash"]


def test_class_names_order_and_unknown_label():
    df = cohort()
    names = ["normal", "mass", "cyst"]
    data = build_split_data(df, build_rule(site="Site B"), image_size=8, loader=FakeLoader(), class_names=names)
    assert data.class_names == names
    assert data.train_retain.labels.tolist() == [names.index(v) for v in data.train_retain.meta.label]
    with pytest.raises(DataError, match='Did you mean "masses"'):
        build_split_data(df, build_rule(site="Site B"), image_size=8, loader=FakeLoader(),
                         class_names=["normal", "masses", "cyst"])


def test_loader_with_wrong_shape_is_refused():
    def bad(df, class_names, image_size, progress=False):
        return np.zeros((3, 1, image_size, image_size), np.float32), np.zeros(3, np.int64)

    with pytest.raises(DataError, match="image loader"):
        build_split_data(cohort(), build_rule(device="ScannerX"), image_size=8, loader=bad)
