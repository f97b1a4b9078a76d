"""Reference models: the membership record matches what each was trained on; the score separates the members
of a deliberately over-fitted model from non-members."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from medunlearn.audit import references as R
from medunlearn.audit.judge import Rows, ScoreCache, audit
from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.models.train import TrainConfig, train_model
from medunlearn.runtime import RunContext


def noise_set(n: int, seed: int, prefix: str, per_patient: int = 1) -> ImageSet:
    """Pure-noise images with random labels: only memorisation can fit them (members vs non-members differ)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    meta = pd.DataFrame({"image_id": [f"{prefix}{i}" for i in range(n)],
                         "patient": [f"{prefix}p{i // per_patient}" for i in range(n)]})
    return ImageSet(x, y, meta)


def noise_split(n_train: int = 48, n_val: int = 48) -> SplitData:
    train, val = noise_set(n_train, 0, "t"), noise_set(n_val, 1, "v")
    empty = train.subset(torch.zeros(0, dtype=torch.long))
    return SplitData(class_names=["a", "b"], train_retain=train, train_forget=empty, val_retain=val,
                     val_forget=val.subset(torch.zeros(0, dtype=torch.long)), test_retain=empty, test_forget=empty)


CFG = TrainConfig(model="small_cnn", model_kwargs={"width": 8}, epochs=40, batch_size=16, lr=0.05,
                  weight_decay=0.0, image_size=8)


def test_plan_halves_is_balanced_by_patient():
    patients = np.array(["a", "a", "b", "c", "c", "c", "d"])
    member = R.plan_halves(patients, 4, seed=3)
    assert member.shape == (4, 7)
    for p in set(patients):
        cols = member[:, patients == p]
        assert (cols == cols[:, :1]).all()  # a patient's images are in or out together
        assert cols[:, 0].sum() == 2  # IN for exactly K/2 models


def test_membership_record_matches_the_rows_each_model_trained_on(monkeypatch):
    data = noise_split()
    seen: list[list[str]] = []

    def fake_train(sub, cfg, ctx, exclude_forget=False):
        seen.append(sub.train.meta["image_id"].tolist())
        return torch.nn.Linear(1, 1), {"n_train": len(sub.train), "wall_time_s": 0.0, "best_epoch": 1,
                                        "best_val_acc": 50.0}

    monkeypatch.setattr("medunlearn.models.train.train_model", fake_train)
    refs = R.train_references(data, CFG, RunContext(), k=4, seed=0)
    ids = np.array(data.train.meta["image_id"])
    assert len(seen) == 4
    for i in range(4):
        assert sorted(seen[i]) == sorted(ids[refs.member[i]].tolist())
        assert not set(seen[i]) & set(data.val.meta["image_id"])  # validation rows are never trained on


def test_lira_separates_members_of_an_overfitted_model_from_non_members():
    torch.manual_seed(0)
    data = noise_split()
    ctx = RunContext(seed=0)
    base, info = train_model(data, CFG, ctx)
    assert info["history"][-1]["train_acc"] > 90  # it memorised noise
    refs = R.train_references(data, CFG, ctx, k=4, seed=0)
    universe = ImageSet.concat([data.train, data.val])
    n_train = len(data.train)
    member = np.concatenate([refs.member, np.zeros((4, len(data.val)), dtype=bool)], axis=1)
    cache = ScoreCache(image_ids=universe.meta["image_id"].tolist(), member=torch.from_numpy(member),
                       ref_phi=torch.stack([R.phi_scores(m, universe, ctx.device) for m in refs.models]),
                       base_phi=R.phi_scores(base, universe, ctx.device))
    forget = Rows(np.arange(24), R.patient_ids(data.train)[:24])  # half the members, as a "forget set"
    cal = Rows(np.arange(n_train, len(universe)), R.patient_ids(data.val))
    target = {"forget": cache.base_phi[:24], "calibration": cache.base_phi[n_train:]}
    result = audit(cache, forget, cal, target, alpha=0.05)
    s = result["set"]["original"]
    assert s["auc"] > 0.8 and s["tpr"] > 0.3 and s["detected"]
    assert result["set"]["verdict"] == "not forgotten"  # the audited model IS the original here
