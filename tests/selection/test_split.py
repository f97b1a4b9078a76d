"""Patient-level splits and forget/retain selection."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medunlearn.errors import ConfigError, DataError, SelectionError
from medunlearn.selection.rules import build_rule
from medunlearn.selection.split import PARTS, patient_split, select

DEVICES = ["ScannerA", "ScannerB", "ScannerX"]
SITES = {"ScannerA": "Site A", "ScannerB": "Site B", "ScannerX": "Site B"}
LABELS = ["benign", "malignant", "normal"]


def make_cohort(n_patients: int = 90, seed: int = 0) -> pd.DataFrame:
    """Hand-made cohort: 1-4 images per patient, labels and devices balanced over patients."""
    g = np.random.default_rng(seed)
    out = []
    for p in range(n_patients):
        dev = DEVICES[(p // 3) % 3]
        for k in range(int(g.integers(1, 5))):
            out.append({"image_id": f"img{p:03d}_{k}", "path": f"/x/{p}_{k}.dcm", "format": "dicom",
                        "label": LABELS[p % 3], "patient": f"pat{p:03d}", "study": f"st{p}", "device": dev,
                        "manufacturer": "GE", "manufacturer_raw": "GE MEDICAL", "site": SITES[dev],
                        "study_date": f"2020-{1 + p % 12:02d}-{1 + k:02d}", "rows": 64, "cols": 64,
                        "measurement_mm": float(g.normal(30, 2))})
    return pd.DataFrame(out)


def patients_per_split(df: pd.DataFrame, split: pd.Series) -> dict[str, set]:
    return {s: set(df.loc[split == s, "patient"]) for s in ("train", "val", "test")}


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_no_patient_in_two_splits(seed):
    df = make_cohort(seed=seed)
    split = patient_split(df, seed=seed)
    assert split.index.equals(df.index) and set(split) == {"train", "val", "test"}
    sets = patients_per_split(df, split)
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert sum(len(s) for s in sets.values()) == df.patient.nunique()


def test_fractions_and_stratification():
    df = make_cohort(300)
    split = patient_split(df, seed=3)
    per_patient = df.assign(split=split).groupby("patient").first()
    frac = per_patient.split.value_counts(normalize=True)
    assert abs(frac["train"] - 0.6) < 0.02 and abs(frac["val"] - 0.2) < 0.02 and abs(frac["test"] - 0.2) < 0.02
    # each label (and each device within a label) is spread in proportion, ±1 patient
    for (label, dev), grp in per_patient.groupby(["label", "device"]):
        n = len(grp)
        for s, f in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
            assert abs((grp.split == s).sum() - f * n) <= 1.5, (label, dev, s)


def test_split_is_deterministic_and_row_order_free():
    df = make_cohort()
    a = patient_split(df, seed=5)
    shuffled = df.sample(frac=1.0, random_state=1)
    b = patient_split(shuffled, seed=5)
    assert a.equals(b.loc[a.index])
    assert not a.equals(patient_split(df, seed=6))


def test_every_class_gets_a_training_patient():
    df = make_cohort(30)
    rare = pd.DataFrame([{**df.iloc[0].to_dict(), "image_id": "rare0", "patient": "zz", "label": "rare"}])
    df = pd.concat([df, rare], ignore_index=True)
    for seed in range(5):
        assert patient_split(df, seed=seed).iloc[-1] == "train"


def test_bad_fractions():
    with pytest.raises(ConfigError, match="fractions"):
        patient_split(make_cohort(10), fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ConfigError, match="fractions"):
        patient_split(make_cohort(10), fractions=(0.0, 0.5, 0.5))


def test_select_parts_counts_and_json():
    df = make_cohort()
    sel = select(df, build_rule(device="ScannerX"), seed=0)
    assert sel.forget.to_numpy().tolist() == (df.device == "ScannerX").tolist()
    all_idx = np.concatenate([sel.part(p) for p in PARTS])
    assert sorted(all_idx.tolist()) == df.index.tolist()
    assert (df.loc[sel.train_forget, "device"] == "ScannerX").all()
    assert (df.loc[sel.test_retain, "device"] != "ScannerX").all()
    assert (sel.split.loc[sel.val_forget] == "val").all()
    c = sel.counts
    assert c["images"]["train"]["forget"] == len(sel.train_forget)
    assert c["patients"]["test"]["forget"] == df.loc[sel.test_forget, "patient"].nunique()
    assert c["per_device"]["train"]["ScannerX"] == {"forget": len(sel.train_forget), "retain": 0}
    assert sum(v["retain"] for v in c["per_class"]["val"].values()) == len(sel.val_retain)
    assert c["per_site"]["train"]["Site B"]["forget"] == len(sel.train_forget)
    rows = sel.summary_rows()
    assert [r["split"] for r in rows] == ["train", "val", "test", "total"]
    assert rows[-1]["forget_images"] + rows[-1]["retain_images"] == len(df)
    record = json.loads(json.dumps(sel.to_json()))
    assert record["rule"]["text"] == "device = ScannerX" and record["seed"] == 0
    assert sorted(record["image_ids"]["train_forget"]) == sorted(df.loc[sel.train_forget, "image_id"])
    assert "/x/" not in json.dumps(record)  # no paths, ids only
    assert select(df, build_rule(device="ScannerX"), seed=0).split_hash == sel.split_hash
    assert select(df, build_rule(device="ScannerX"), seed=1).split_hash != sel.split_hash
    other = select(df, build_rule(device="ScannerA"), seed=0)
    assert other.split_hash != sel.split_hash and other.train_hash == sel.train_hash  # train rows are rule-free
    assert record["train_hash"] == sel.train_hash


def test_empty_and_total_forget_sets():
    df = make_cohort(30)
    with pytest.raises(SelectionError, match="matches none"):
        select(df, build_rule(where="measurement_mm>1000"))
    with pytest.raises(SelectionError, match="matches all"):
        select(df, build_rule(where="rows=64"))
    # forgetting a whole class is a legitimate policy (class withdrawal): allowed and recorded
    whole_class = select(df, build_rule(where="label=normal"))
    assert whole_class.counts["total"]["classes_fully_forgotten"] == ["normal"]
    assert select(df, None).counts["total"]["classes_fully_forgotten"] == []
    assert not select(df, None).forget.any()
    with pytest.raises(SelectionError, match="Did you mean"):
        select(df, build_rule(device="ScanerX"))


def test_unlabelled_rows():
    df = make_cohort(30)
    df.loc[[0, 1], "label"] = ""
    sel = select(df, build_rule(device="ScannerX"))
    assert 0 not in sel.split.index and sel.counts["total"]["dropped_unlabelled"] == 2
    with pytest.raises(SelectionError, match="2 unlabelled"):
        select(df, build_rule(device="ScannerX"), drop_unlabelled=False)
    with pytest.raises(SelectionError, match="all .* are unlabelled"):
        select(df.assign(label=np.nan), build_rule(device="ScannerX"))
    with pytest.raises(DataError, match="label"):
        select(df.drop(columns=["label"]), build_rule(device="ScannerX"))


def test_outlier_statistics_use_train_rows_only():
    df = make_cohort(120)
    sel0 = select(df, build_rule(outliers="measurement_mm>31"), seed=0)
    assert (df.loc[sel0.forget[sel0.forget].index, "measurement_mm"] > 31).all()
    split = patient_split(df, seed=0)
    train_rows = df.index[split == "train"][:3]
    df.loc[train_rows, "measurement_mm"] = [80.0, 90.0, -10.0]
    base = select(df, build_rule(outliers="measurement_mm:auto"), seed=0)
    assert sorted(base.train_forget.tolist()) == sorted(train_rows.tolist())
    # shift every held-out measurement far away: judged against TRAIN statistics they all become outliers,
    # and the train forget set is unchanged (held-out rows do not move the median / MAD)
    held = (split != "train").to_numpy()
    moved = df.copy()
    moved.loc[held, "measurement_mm"] += 50.0
    sel = select(moved, build_rule(outliers="measurement_mm:auto"), seed=0)
    assert sel.forget[held].all()
    assert np.array_equal(sel.train_forget, base.train_forget)
