"""Metric math vs scikit-learn on random inputs and edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from medunlearn.errors import DataError
from medunlearn.evaluate import functional as fn


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
