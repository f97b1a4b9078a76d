"""The controller's probes (`Probes`: fixed seeded validation subsamples and the measurement on them) and the
pure helpers they use: eval-mode logits, accuracy, fixed subsamples, a rank AUC."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.evaluate.functional import true_label_probability
from medunlearn.unlearn.criteria import Criteria, bootstrap_mean, bootstrap_membership, confidence_stats
from medunlearn.unlearn.types import ControlConfig


# ---------------------------------------------------------------- pure functions
def auc_higher(neg: torch.Tensor, pos: torch.Tensor) -> float:
    """P(pos > neg) + 0.5 P(tie) (Mann-Whitney AUC). neg: (N,), pos: (M,)."""
    if neg.numel() == 0 or pos.numel() == 0:
        return 0.5
    scores = torch.cat([neg, pos]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inv = scores.unique(return_inverse=True)
    ranks = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, ranks)[inv] / torch.bincount(inv)[inv]
    n_pos = pos.numel()
    u = ranks[len(neg):].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * neg.numel()))


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, num_classes: int, device: torch.device,
                   batch_size: int = 256) -> torch.Tensor:
    """Eval-mode logits (N, K), restoring each module's train/eval flag afterwards. Extra logits (a
    shadow class) are cut to the first `num_classes`."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        out = [model(images[i:i + batch_size].to(device))[:, :num_classes].float().cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        for m, f in flags:
            m.train(f)
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def accuracy_pct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Percent of rows whose argmax equals the label; logits (N, K), labels (N,)."""
    if len(labels) == 0:
        return 0.0
    return _pct(logits.argmax(1) == labels.to(logits.device))


def expected_accuracy_pct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean softmax probability of the true label, in percent: the accuracy of the model's own predictive
    distribution (100/K for any label-blind output, whatever the class mix)."""
    if len(labels) == 0:
        return 0.0
    return 100.0 * true_label_probability(logits.float().softmax(1), labels)


def subsample(s: ImageSet, n: int, seed: int) -> ImageSet:
    """A fixed random subset of at most n rows (the same on every check)."""
    if len(s) <= n:
        return s
    idx = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed))[:n]
    return s.subset(idx)


# ---------------------------------------------------------------- the controller's probes
class Probes:
    """Fixed seeded validation subsamples and the measurement on them."""

    def __init__(self, data: SplitData, cfg: ControlConfig, goal: str, seed: int, device: torch.device) -> None:
        self.k, self.goal, self.device, self.seed = data.num_classes, goal, device, seed
        equivalence = goal == "equivalence"  # the membership comparison needs more rows than a threshold check
        if len(data.val_forget):
            held, self.forget_source = data.val_forget, "val_forget"
        elif equivalence:  # held-out rows of the same domain are missing: use all of val
            held, self.forget_source = data.val, "val (val_forget is empty)"
        else:
            held, self.forget_source = data.train_forget, "train_forget (val_forget is empty)"
        self.forget = subsample(held, cfg.membership_rows if equivalence else cfg.max_eval, seed)
        retain = data.val_retain if len(data.val_retain) else data.train_retain
        self.retain_source = "val_retain" if len(data.val_retain) else "train_retain (val_retain is empty)"
        self.retain = subsample(retain, cfg.max_eval, seed + 1)
        self._order: torch.Tensor | None = None  # retain probe rows, those wrong at the last full read first
        self.members = subsample(data.train_forget, cfg.membership_rows, seed + 2) if equivalence else None
        margin = cfg.confidence_margin
        self.route = None if margin is None else min(100.0, 100.0 / self.k + float(margin))  # (d)'s routing line
        self.last_retain: dict[str, float] | None = None  # retain_at_least's full read of the state it restored

    def rows(self) -> int:
        return len(self.forget) + len(self.retain) + (len(self.members) if self.members is not None else 0)

    def _logits(self, model: nn.Module, s: ImageSet) -> torch.Tensor:
        return predict_logits(model, s.images, self.k, self.device)

    def retain_acc(self, model: nn.Module) -> float:
        return self.retain_stats(model)["retain_acc"]

    def retain_stats(self, model: nn.Module) -> dict[str, float]:
        """Accuracy (c), mean max-softmax and routed share (d) of the retain probe, from one forward pass."""
        logits = self._logits(model, self.retain)
        correct = logits.argmax(1) == self.retain.labels
        self._wrong_first(correct)
        return {"retain_acc": _pct(correct), **confidence_stats(logits.float().softmax(1), self.route)}

    def retain_at_least(self, model: nn.Module, guard: float, min_conf: float | None = None) -> float | None:
        """The retain probe's accuracy when it is >= `guard` (and its mean max-softmax >= `min_conf`, when given),
        else None; on success `last_retain` holds the full read (retain_stats of this state).

        It gives up as soon as the rows not yet read could not lift the accuracy to the guard (or the confidence to
        `min_conf`, counting every unread row at 100 %), reading first the rows that were wrong at the last full
        read (retain repair asks this after every repair step, and most answers are "not yet": before this, those
        reads took ~30 % of a 5k-image FAMR run)."""
        images, labels, n = self.retain.images, self.retain.labels, len(self.retain)
        order = self._order if self._order is not None else torch.arange(n)
        correct = torch.zeros(n, dtype=torch.bool)
        probs = torch.zeros(n, self.k)
        conf_sum = 0.0
        self.last_retain = None
        for start in range(0, n, RETAIN_CHUNK):
            idx = order[start:start + RETAIN_CHUNK]
            logits = predict_logits(model, images[idx], self.k, self.device)
            correct[idx] = logits.argmax(1) == labels[idx]
            probs[idx] = logits.float().softmax(1)
            conf_sum += float(probs[idx].amax(1).double().sum()) * 100.0
            read = start + len(idx)
            if _pct_of(int(correct.sum()) + n - read, n) < guard:
                return None
            if min_conf is not None and n and (conf_sum + 100.0 * (n - read)) / n < min_conf:
                return None
        self._wrong_first(correct)
        stats = {"retain_acc": _pct(correct), **confidence_stats(probs, self.route)}
        if stats["retain_acc"] < guard or (min_conf is not None and stats["retain_conf"] < min_conf):
            return None
        self.last_retain = stats
        return stats["retain_acc"]

    def _wrong_first(self, correct: torch.Tensor) -> None:
        self._order = torch.cat([torch.nonzero(~correct).flatten(), torch.nonzero(correct).flatten()])

    def forget_interval(self, model: nn.Module, criteria: Criteria) -> tuple[float, float]:
        """Bootstrap interval (criteria.ci_level) of criterion (a)'s measure on the forget probe: per row, the
        true-label probability ("expected") or 0/1 correctness ("argmax"), in percent."""
        lf = self._logits(model, self.forget).float()
        y = self.forget.labels
        rows = lf.softmax(1).gather(1, y[:, None])[:, 0] if criteria.forget_measure == "expected" \
            else (lf.argmax(1) == y).double()
        return bootstrap_mean(100.0 * rows, criteria.bootstrap, criteria.ci_level, self.seed)

    def measure(self, model: nn.Module, criteria: Criteria | None,
                retain: dict[str, float] | None = None) -> dict[str, float]:
        """The check's measurements; `retain` = retain_stats of this very state when the caller has just read it
        (policy checks pass zeros: the retain probe is the caller's)."""
        lf = self._logits(model, self.forget)
        m = {"forget_acc": accuracy_pct(lf, self.forget.labels),
             "forget_expected": expected_accuracy_pct(lf, self.forget.labels),
             "forget_conf": float(lf.float().softmax(1).amax(1).mean() * 100) if len(lf) else 0.0,
             **(self.retain_stats(model) if retain is None else retain)}
        if self.members is not None and criteria is not None:
            lm = self._logits(model, self.members)
            m.update(bootstrap_membership(
                (lm.argmax(1) == self.members.labels).long(), F.cross_entropy(lm, self.members.labels, reduction="none"),
                (lf.argmax(1) == self.forget.labels).long(), F.cross_entropy(lf, self.forget.labels, reduction="none"),
                criteria.bootstrap, criteria.ci_level, self.seed))
        return m


RETAIN_CHUNK = 128  # rows per read of retain_at_least


def _pct(correct: torch.Tensor) -> float:
    """Percent of True entries, as every probe accuracy is computed: exact count / n in float64. (A float32 mean
    put 72 of 73 rows at 98.630135, below the one-row guard 100 − 100/73 = 98.630137, so the drop of one row
    that criterion (c) allows never passed.)"""
    return _pct_of(int(correct.sum()), correct.numel())


def _pct_of(count: int, n: int) -> float:
    """Percent of `count` out of `n` rows (0 for no rows)."""
    return 100.0 * count / n if n else 0.0
