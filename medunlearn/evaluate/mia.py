"""Membership-inference attacks: an `Attack` base with two hooks and the two attacks unlearning papers report.

- `LossLRAttack` (NeurIPS 2023 unlearning challenge kit, SCRUB, PSG): logistic regression on the per-sample
  cross-entropy loss, forget rows (members) vs held-out rows (non-members), classes balanced by
  subsampling, stratified k-fold CV; reports accuracy and AUC mean ± std. 0.5 = indistinguishable.
- `SVCShadowAttack` (SalUn / ℓ1-sparse `SVC_MIA`): an RBF SVC trained on retain (member) vs test
  (non-member) features, applied to the forget set; efficacy = percent of forget rows predicted non-member.

Hooks: `features(probs, labels, losses) -> (N, D)` turns model outputs into attack features, and
`fit(x, y)` / `score(x)` train the attack classifier and return member scores. Inputs are numpy arrays:
probs (N, K), labels (N,), losses (N,). Every subsample is drawn from a seeded generator.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from medunlearn.errors import ConfigError
from medunlearn.evaluate.functional import binary_auroc, entropy
from medunlearn.registry import did_you_mean

EPS = 1e-12


@dataclass
class AttackInputs:
    """Per-sample model outputs for one set of images: probs (N, K), labels (N,), losses (N,)."""

    probs: np.ndarray
    labels: np.ndarray
    losses: np.ndarray

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor) -> AttackInputs:
        """logits (N, K), labels (N,) -> softmax probs and per-sample CE losses (float64 numpy)."""
        logits = logits.detach().float().cpu()
        labels = labels.detach().long().cpu()
        losses = F.cross_entropy(logits, labels, reduction="none") if len(labels) else torch.zeros(0)
        return cls(torch.softmax(logits, dim=1).double().numpy(), labels.numpy(), losses.double().numpy())

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> AttackInputs:
        return AttackInputs(self.probs[idx], self.labels[idx], self.losses[idx])

    @staticmethod
    def concat(parts: list[AttackInputs]) -> AttackInputs:
        return AttackInputs(np.concatenate([p.probs for p in parts]), np.concatenate([p.labels for p in parts]),
                            np.concatenate([p.losses for p in parts]))


def true_label_prob(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p_y per row, (N,)."""
    return probs[np.arange(len(labels)), labels]


def modified_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal (2021) Mentr = −(1−p_y) log p_y − Σ_{i≠y} p_i log(1−p_i), (N,). Low for confident-correct."""
    py = true_label_prob(probs, labels)
    others = probs * np.log(np.clip(1.0 - probs, EPS, None))
    others[np.arange(len(labels)), labels] = 0.0
    return -(1.0 - py) * np.log(np.clip(py, EPS, None)) - others.sum(axis=1)


def balanced_subsample(n_a: int, n_b: int, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size random index subsets of two sets: min(n_a, n_b, cap) rows each."""
    m = min(n_a, n_b, cap)
    return rng.choice(n_a, m, replace=False), rng.choice(n_b, m, replace=False)


class Attack(abc.ABC):
    """Base class. Subclasses set `name` and implement `features`; `fit` / `score` wrap `estimator()`."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def features(self, probs: np.ndarray, labels: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """Attack features, (N, D)."""

    @abc.abstractmethod
    def estimator(self) -> Any:
        """A fresh scikit-learn classifier (member = 1)."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Attack:
        self._clf = self.estimator().fit(x, y)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Member score per row, (N,): higher = more likely a member."""
        clf = self._clf
        if hasattr(clf, "predict_proba"):
            return clf.predict_proba(x)[:, 1]
        return clf.decision_function(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Member (1) / non-member (0) per row, (N,)."""
        return self._clf.predict(x)

    def inputs_features(self, inputs: AttackInputs) -> np.ndarray:
        return self.features(inputs.probs, inputs.labels, inputs.losses)


@dataclass
class LossLRAttack(Attack):
    """Logistic regression on per-sample CE loss with stratified k-fold CV over a balanced sample."""

    name: ClassVar[str] = "loss_lr"
    n_splits: int = 5
    max_per_side: int = 2000
    seed: int = 0

    def features(self, probs: np.ndarray, labels: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return np.log1p(np.asarray(losses, dtype=np.float64)).reshape(-1, 1)  # log: losses are heavy-tailed

    def estimator(self) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression())

    def run(self, members: AttackInputs, nonmembers: AttackInputs) -> dict[str, float]:
        """{acc_mean, acc_std, auc_mean, auc_std} (fractions; 0.5 = chance), n (rows per side), n_splits."""
        rng = np.random.default_rng(self.seed)
        ia, ib = balanced_subsample(len(members), len(nonmembers), self.max_per_side, rng)
        n = len(ia)
        k = min(self.n_splits, n)
        nan = float("nan")
        if k < 2:
            return {"acc_mean": nan, "acc_std": nan, "auc_mean": nan, "auc_std": nan, "n": n, "n_splits": 0}
        x = np.concatenate([self.inputs_features(members.subset(ia)), self.inputs_features(nonmembers.subset(ib))])
        y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
        accs, aucs = [], []
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.seed)
        for tr, te in cv.split(x, y):
            self.fit(x[tr], y[tr])
            accs.append(float(np.mean(self.predict(x[te]) == y[te])))
            aucs.append(binary_auroc(self.score(x[te]), y[te] == 1))
        return {"acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)),
                "auc_mean": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "n": n, "n_splits": k}


SVC_FEATURES = ("confidence", "entropy", "m_entropy", "prob", "correctness")


@dataclass
class SVCShadowAttack(Attack):
    """RBF SVC (C=3, gamma='auto') on retain-vs-test features, applied to the forget set.

    feature_set: names from SVC_FEATURES, concatenated as columns. "confidence" (true-label probability)
    is the default: it separates models where max-softmax and loss features do not (docs/background.md, trap 5).
    """

    name: ClassVar[str] = "svc"
    feature_set: tuple[str, ...] = ("confidence",)
    max_per_side: int = 2000  # shadow training rows per class; SVC fit is O(n²)
    max_target: int = 10000  # forget rows scored
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.feature_set, str):
            self.feature_set = (self.feature_set,)
        if not self.feature_set:
            raise ConfigError(f"Expected at least one SVC feature from {list(SVC_FEATURES)}, but got none")
        for f in self.feature_set:
            if f not in SVC_FEATURES:
                raise ConfigError(f"Expected an SVC feature in {list(SVC_FEATURES)}, but got {f!r}."
                                  f"{did_you_mean(f, list(SVC_FEATURES))}")
        self.feature_set = tuple(self.feature_set)

    def features(self, probs: np.ndarray, labels: np.ndarray, losses: np.ndarray) -> np.ndarray:
        cols = []
        for f in self.feature_set:
            if f == "confidence":
                cols.append(true_label_prob(probs, labels)[:, None])
            elif f == "entropy":
                cols.append(entropy(probs)[:, None])
            elif f == "m_entropy":
                cols.append(modified_entropy(probs, labels)[:, None])
            elif f == "prob":
                cols.append(probs)
            else:  # correctness
                cols.append((probs.argmax(axis=1) == labels).astype(np.float64)[:, None])
        return np.concatenate(cols, axis=1)

    def estimator(self) -> Any:
        return SVC(C=3, gamma="auto", kernel="rbf")

    def run(self, shadow_members: AttackInputs, shadow_nonmembers: AttackInputs,
            target: AttackInputs) -> dict[str, Any]:
        """{efficacy: percent of target rows predicted non-member (NaN if undefined), shadow_acc, n_train,
        n_target, features}. shadow_acc is the attack's accuracy on its own balanced training rows."""
        rng = np.random.default_rng(self.seed)
        ia, ib = balanced_subsample(len(shadow_members), len(shadow_nonmembers), self.max_per_side, rng)
        n = len(ia)
        out: dict[str, Any] = {"efficacy": float("nan"), "shadow_acc": float("nan"), "n_train": n,
                               "n_target": 0, "features": list(self.feature_set)}
        if n < 1 or len(target) == 0:
            return out
        x = np.concatenate([self.inputs_features(shadow_members.subset(ia)),
                            self.inputs_features(shadow_nonmembers.subset(ib))])
        y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
        self.fit(x, y)
        out["shadow_acc"] = float(np.mean(self.predict(x) == y))
        if len(target) > self.max_target:
            target = target.subset(rng.choice(len(target), self.max_target, replace=False))
        pred = self.predict(self.inputs_features(target))
        out["efficacy"] = float(100.0 * np.mean(pred == 0))
        out["n_target"] = len(target)
        return out
