"""Metric math vs scikit-learn on random inputs and edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from medunlearn.errors import DataError
from medunlearn.evaluate import functional as fn
from medunlearn.evaluate.functional import predict


def _random(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    logits = g.normal(size=(n, k)) * 2
    labels = g.integers(0, k, size=n)
    logits[np.arange(n), labels] += g.normal(1.0, 1.0, size=n)  # informative but imperfect
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, labels, probs.argmax(1)


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 5)])
def test_against_sklearn(seed: int, k: int) -> None:
    probs, labels, preds = _random(300, k, seed)
    assert fn.accuracy(preds, labels) == pytest.approx(100 * skm.accuracy_score(labels, preds))
    assert fn.accuracy(torch.from_numpy(probs), torch.from_numpy(labels)) == pytest.approx(
        100 * skm.accuracy_score(labels, preds))
    np.testing.assert_array_equal(fn.confusion_matrix(preds, labels, k),
                                  skm.confusion_matrix(labels, preds, labels=list(range(k))))
    sens, spec = fn.sensitivity_specificity(preds, labels, k)
    rec = skm.recall_score(labels, preds, labels=list(range(k)), average=None)
    np.testing.assert_allclose([sens[c] for c in range(k)], 100 * rec)
    per_class = fn.per_class_accuracy(preds, labels, k)
    np.testing.assert_allclose([per_class[c] for c in range(k)], 100 * rec)
    for c in range(k):  # specificity = recall of "not c"
        want = skm.recall_score(labels != c, preds != c)
        assert spec[c] == pytest.approx(100 * want)
    res = fn.auroc_macro_ovr(probs, labels)
    want = (skm.roc_auc_score(labels, probs[:, 1]) if k == 2
            else skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert res["auroc"] == pytest.approx(want)
    assert res["skipped"] == []


def test_auroc_ties_and_absent_class() -> None:
    scores = np.array([0.1, 0.5, 0.5, 0.5, 0.9, 0.2])
    pos = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    assert fn.binary_auroc(scores, pos) == pytest.approx(skm.roc_auc_score(pos, scores))
    probs, labels, _ = _random(200, 4, 3)
    labels[labels == 2] = 0  # class 2 absent
    res = fn.auroc_macro_ovr(probs, labels)
    assert res["skipped"] == [2] and np.isnan(res["per_class"][2])
    want = np.mean([skm.roc_auc_score(labels == c, probs[:, c]) for c in (0, 1, 3)])
    assert res["auroc"] == pytest.approx(want)
    only = fn.auroc_macro_ovr(probs[:5], np.zeros(5, dtype=int))
    assert np.isnan(only["auroc"]) and only["skipped"] == [0, 1, 2, 3]


def test_ece_known_values() -> None:
    # all predictions confident 0.9 and all correct -> ECE = 0.1
    probs = np.tile([0.9, 0.1], (10, 1))
    assert fn.expected_calibration_error(probs, np.zeros(10, dtype=int)) == pytest.approx(0.1)
    # half correct at confidence 0.5 -> perfectly calibrated
    probs = np.tile([0.5, 0.5], (10, 1))
    labels = np.array([0, 1] * 5)
    assert fn.expected_calibration_error(probs, labels) == pytest.approx(0.0)
    # two bins: conf 0.95 all correct (gap .05), conf 0.6 none correct (gap .6) -> weighted mean
    probs = np.array([[0.95, 0.05]] * 3 + [[0.6, 0.4]] * 1)
    labels = np.array([0, 0, 0, 1])
    assert fn.expected_calibration_error(probs, labels) == pytest.approx(0.75 * 0.05 + 0.25 * 0.6)


def test_confidence_entropy_kl_agreement_groups() -> None:
    uniform = np.full((4, 4), 0.25)
    onehot = np.eye(4)
    assert fn.mean_confidence(uniform) == pytest.approx(0.25)
    np.testing.assert_allclose(fn.entropy(uniform), np.log(4))
    np.testing.assert_allclose(fn.kl_to_uniform(uniform), 0.0, atol=1e-12)
    np.testing.assert_allclose(fn.kl_to_uniform(onehot), np.log(4), atol=1e-9)
    assert fn.prediction_agreement([0, 1, 2, 3], [0, 1, 0, 0]) == pytest.approx(50.0)
    groups = np.array(["a", "b", "a", "b", "b"])
    res = fn.per_group_accuracy([0, 1, 1, 1, 0], [0, 1, 0, 1, 1], groups)
    assert res == {"a": {"n": 2, "acc": 50.0}, "b": {"n": 3, "acc": pytest.approx(200 / 3)}}


def test_empty_and_errors() -> None:
    assert np.isnan(fn.accuracy(np.zeros(0), np.zeros(0)))
    assert np.isnan(fn.mean_confidence(np.zeros((0, 3))))
    assert np.isnan(fn.per_class_accuracy([0, 0], [0, 0], 2)[1])
    with pytest.raises(DataError, match="Expected preds and labels of equal length, but got 3 and 2"):
        fn.accuracy([0, 1, 2], [0, 1])
    with pytest.raises(DataError, match="Expected class indices in"):
        fn.confusion_matrix([0, 5], [0, 1], 3)
    with pytest.raises(DataError, match="Expected probs of shape"):
        fn.expected_calibration_error(np.zeros(3), np.zeros(3))
    with pytest.raises(DataError, match="Expected labels in"):
        fn.auroc_macro_ovr(np.full((2, 2), 0.5), [0, 2])
    with pytest.raises(DataError, match="Expected one group per sample"):
        fn.per_group_accuracy([0], [0], ["a", "b"])


def test_binary_auroc_matches_sklearn_on_tied_integer_scores() -> None:
    # the comparison probes.auc_higher (now removed) was held to: integer scores with many ties
    g = torch.Generator().manual_seed(0)
    neg, pos = torch.randint(0, 5, (40,), generator=g).float(), torch.randint(1, 6, (30,), generator=g).float()
    ref = skm.roc_auc_score([0] * 40 + [1] * 30, torch.cat([neg, pos]).numpy())
    got = fn.binary_auroc(torch.cat([neg, pos]), torch.tensor([False] * 40 + [True] * 30))
    assert abs(got - ref) < 1e-9


def test_accuracy_is_the_exact_count_over_n() -> None:
    # a float32 mean put 72/73 rows below the one-row guard 100 - 100/73; the exact count does not
    labels = torch.zeros(73, dtype=torch.long)
    preds = labels.clone()
    preds[0] = 1
    assert fn.accuracy(preds, labels) == 100.0 * 72 / 73 >= 100 - 100 / 73
    assert np.isnan(fn.percent(0, 0)) and fn.percent(1, 4) == 25.0


def test_expected_accuracy_from_logits() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    want = 100 * np.mean([np.exp(2) / (np.exp(2) + 1), np.exp(1) / (np.exp(1) + 1)])
    assert fn.expected_accuracy(logits, torch.tensor([0, 1])) == pytest.approx(want)
    assert np.isnan(fn.expected_accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


def test_predict_restores_every_module_mode_and_model_accuracy() -> None:
    from medunlearn.models.modes import freeze_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model.train()
    freeze_batchnorm(model)  # a method froze BatchNorm: predict must leave it frozen
    flags = [m.training for m in model.modules()]
    x, y = torch.rand(10, 4), torch.randint(0, 3, (10,))
    logits = predict(model, x, batch_size=3)
    assert [m.training for m in model.modules()] == flags
    assert logits.shape == (10, 3) and logits.dtype == torch.float32
    assert fn.model_accuracy(model, x, y, batch_size=4) == fn.accuracy(logits, y)
    assert np.isnan(fn.model_accuracy(model, x[:0], y[:0]))
