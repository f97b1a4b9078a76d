"""evaluate_model: schema, ranges, self-reference identities, original / reference comparisons."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from medunlearn.data.imageset import ImageSet
from medunlearn.evaluate import functional as fn
from medunlearn.evaluate.functional import predict
from medunlearn.evaluate.suite import CORE_KEYS, core_metrics, evaluate_model
from medunlearn.runtime import RunContext
from tests.conftest import make_tiny_split

SCHEMA_KEYS = ["schema_version", "class_names", "chance_acc", "forget_acc", "retain_acc", "val_forget_acc",
               "test_retain_acc", "test_forget_acc", "test_acc", "test_forget_confidence", "per_class",
               "per_device", "per_site", "auroc", "sensitivity", "specificity", "ece", "confusion", "mia",
               "mia_efficacy", "wall_time_s", "rte"]


class TinyNet(nn.Module):
    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _train(s: ImageSet, seed: int, epochs: int = 30) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(epochs):
        for batch in s.loader(64, shuffle=True, seed=seed):
            opt.zero_grad()
            nn.functional.cross_entropy(model(batch["image"]), batch["label"]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def setup():
    data = make_tiny_split()
    original = _train(data.train, 0)
    reference = _train(data.train_retain, 1)
    return data, original, reference


def test_schema_and_ranges(setup) -> None:
    data, original, _ = setup
    res = evaluate_model(original, data, wall_time_s=2.0)
    json.dumps(res, allow_nan=False)  # strict JSON: NaN already turned into null
    for key in SCHEMA_KEYS:
        assert key in res, key
    assert res["schema_version"] == 1 and res["class_names"] == data.class_names
    assert res["chance_acc"] == pytest.approx(33.3333)
    for key in ("forget_acc", "retain_acc", "val_forget_acc", "test_retain_acc", "test_forget_acc", "test_acc",
                "test_forget_confidence", "mia_efficacy"):
        assert 0 <= res[key] <= 100, key
    assert res["retain_acc"] > 60 and res["test_forget_confidence"] >= res["chance_acc"]
    assert res["counts"] == {"train_retain": 180, "train_forget": 60, "val_forget": 30, "test_retain": 90,
                             "test_forget": 30, "train": 240, "test": 120}
    want = fn.accuracy(predict(original, data.train_forget.images), data.train_forget.labels)
    assert res["forget_acc"] == pytest.approx(want, abs=1e-4)
    assert set(res["per_class"]) == {"train_retain", "train_forget", "val_forget", "test_retain", "test_forget", "test"}
    assert set(res["per_class"]["test"]) == set(data.class_names)
    assert set(res["per_device"]) == {"ScannerA", "ScannerB", "ScannerC", "ScannerX"}
    assert res["per_device"]["ScannerX"]["n_train"] == 60 and res["per_device"]["ScannerX"]["n_test"] == 30
    assert res["per_device"]["ScannerX"]["train_acc"] == pytest.approx(res["forget_acc"], abs=1e-3)
    assert res["per_site"]["SiteB"]["n_train"] == 120 and set(res["per_site"]) == {"SiteA", "SiteB", "SiteC"}
    assert 0 <= res["auroc"] <= 1 and 0 <= res["ece"] <= 1
    assert res["auroc_detail"]["skipped"] == []
    assert set(res["sensitivity"]) == set(data.class_names) == set(res["specificity"])
    matrix = res["confusion"]["matrix"]
    assert res["confusion"]["labels"] == data.class_names and sum(map(sum, matrix)) == 120
    lr, svc = res["mia"]["loss_lr"], res["mia"]["svc"]
    assert set(lr) >= {"acc_mean", "acc_std", "auc_mean", "auc_std"} and 0 <= lr["auc_mean"] <= 1
    assert svc["efficacy"] == res["mia_efficacy"] and svc["features"] == ["confidence"]
    assert set(svc["by_feature"]) == {"confidence", "entropy"}
    assert res["rte"] is None and res["wall_time_s"] == 2.0
    assert "gap" not in res and "original" not in res
    assert list(core_metrics(res)) == list(CORE_KEYS)


def test_self_reference_identities(setup) -> None:
    data, original, _ = setup
    res = evaluate_model(original, data, original=original, reference=copy.deepcopy(original),
                         wall_time_s=4.0, reference_wall_time_s=10.0)
    assert res["avg_gap"] == 0.0 and res["agreement"] == 100.0
    assert res["gap"] == {"FA": 0.0, "RA": 0.0, "TA": 0.0, "MIA": 0.0}
    assert res["dist_to_original"] == 0.0 and res["dist_to_reference"] == 0.0
    assert res["flip_rate_retain"] == 0.0
    assert all(v in (0.0, None) for v in res["delta_vs_original"].values())
    assert res["reference"] == core_metrics(res) and res["rte"] == 2.5


def test_against_a_different_reference(setup) -> None:
    data, original, reference = setup
    res = evaluate_model(original, data, original=reference, reference=reference, ctx=RunContext())
    ref = res["reference"]
    assert res["gap"]["FA"] == pytest.approx(abs(res["forget_acc"] - ref["forget_acc"]), abs=2e-4)
    assert res["gap"]["TA"] == pytest.approx(abs(res["test_acc"] - ref["test_acc"]), abs=2e-4)
    assert res["avg_gap"] == pytest.approx(sum(res["gap"].values()) / 4, abs=2e-4)
    assert res["gap_details"]["test_forget_acc"] == pytest.approx(res["test_forget_acc"] - ref["test_forget_acc"], abs=2e-4)
    assert res["delta_vs_original"]["retain_acc"] == pytest.approx(res["retain_acc"] - ref["retain_acc"], abs=2e-4)
    assert res["dist_to_reference"] > 0 and 0 <= res["agreement"] <= 100
    want = 100 - fn.prediction_agreement(predict(original, data.train_retain.images).argmax(1),
                                         predict(reference, data.train_retain.images).argmax(1))
    assert res["flip_rate_retain"] == pytest.approx(want, abs=1e-4)


def test_predict_mode_batches_and_empty(setup) -> None:
    data, original, _ = setup
    model = copy.deepcopy(original).train()
    full = predict(model, data.test.images, batch_size=1000)
    assert model.training  # mode restored
    assert torch.allclose(full, predict(model, data.test.images, batch_size=7), atol=1e-5)
    assert full.shape == (120, 3) and not full.requires_grad
    assert predict(model, data.test.images[:0]).shape == (0, 3)
    assert predict(model, data.test.images[:0], num_classes=2).shape == (0, 2)
    assert torch.equal(predict(model, data.test.images, num_classes=2), full[:, :2])


def test_empty_val_forget_is_null(setup) -> None:
    data, original, _ = setup
    data = copy.copy(data)
    data.val_forget = data.val_forget.subset([])
    res = evaluate_model(original, data)
    assert res["val_forget_acc"] is None and res["per_class"]["val_forget"]["class0"] is None
