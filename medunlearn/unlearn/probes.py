"""The controller's probes (`Probes`: fixed seeded validation subsamples and the measurement on them).

Every number is computed by evaluate/functional (logits under `evaluating`, accuracy, expected accuracy, mean
confidence); an empty probe gives NaN, and a check on it fails with "no rows" (criteria._check)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.evaluate import functional as fn
from medunlearn.evaluate.functional import predict
from medunlearn.unlearn.criteria import Criteria, bootstrap_mean, bootstrap_membership, confidence_stats
from medunlearn.unlearn.types import ControlConfig


# ---------------------------------------------------------------- pure functions
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
        return predict(model, s.images, device=self.device, num_classes=self.k)

    def retain_acc(self, model: nn.Module) -> float:
        return self.retain_stats(model)["retain_acc"]

    def retain_stats(self, model: nn.Module) -> dict[str, float]:
        """Accuracy (c), mean max-softmax and routed share (d) of the retain probe, from one forward pass."""
        logits = self._logits(model, self.retain)
        self._wrong_first(logits.argmax(1) == self.retain.labels)
        return {"retain_acc": fn.accuracy(logits, self.retain.labels),
                **confidence_stats(logits.float().softmax(1), self.route)}

    def retain_at_least(self, model: nn.Module, guard: float, min_conf: float | None = None) -> float | None:
        """The retain probe's accuracy when it is >= `guard` (and its mean max-softmax >= `min_conf`, when given),
        else None; on success `last_retain` holds the full read (retain_stats of this state).

        It gives up as soon as the rows not yet read could not lift the accuracy to the guard (or the confidence to
        `min_conf`, counting every unread row at 100 %), reading first the rows that were wrong at the last full
        read (retain repair asks this after every repair step, and most answers are "not yet": before this, those
        reads took ~30 % of a 5k-image FAMR run)."""
        images, labels, n = self.retain.images, self.retain.labels, len(self.retain)
        self.last_retain = None
        if n == 0:  # no rows: nothing holds
            return None
        order = self._order if self._order is not None else torch.arange(n)
        correct = torch.zeros(n, dtype=torch.bool)
        probs = torch.zeros(n, self.k)
        conf_sum = 0.0
        for start in range(0, n, RETAIN_CHUNK):
            idx = order[start:start + RETAIN_CHUNK]
            logits = predict(model, images[idx], device=self.device, num_classes=self.k)
            correct[idx] = logits.argmax(1) == labels[idx]
            probs[idx] = logits.float().softmax(1)
            conf_sum += float(probs[idx].amax(1).double().sum()) * 100.0
            read = start + len(idx)
            if fn.percent(int(correct.sum()) + n - read, n) < guard:  # even if every unread row were right
                return None
            if min_conf is not None and n and (conf_sum + 100.0 * (n - read)) / n < min_conf:
                return None
        self._wrong_first(correct)
        stats = {"retain_acc": fn.percent(int(correct.sum()), n), **confidence_stats(probs, self.route)}
        if stats["retain_acc"] < guard or (min_conf is not None and stats["retain_conf"] < min_conf):
            return None
        self.last_retain = stats
        return stats["retain_acc"]

    def _wrong_first(self, correct: torch.Tensor) -> None:
        self._order = torch.cat([torch.nonzero(~correct).flatten(), torch.nonzero(correct).flatten()])

    def forget_logits(self, model: nn.Module) -> torch.Tensor:
        return self._logits(model, self.forget)

    def forget_interval(self, model: nn.Module, criteria: Criteria,
                        forget_logits: torch.Tensor | None = None) -> tuple[float, float]:
        """Bootstrap interval (criteria.ci_level) of criterion (a)'s measure on the forget probe: per row, the
        true-label probability ("expected") or 0/1 correctness ("argmax"), in percent. `forget_logits`: this
        model's forget_logits when the caller has just read them."""
        lf = (self.forget_logits(model) if forget_logits is None else forget_logits).float()
        y = self.forget.labels
        rows = lf.softmax(1).gather(1, y[:, None])[:, 0] if criteria.forget_measure == "expected" \
            else (lf.argmax(1) == y).double()
        return bootstrap_mean(100.0 * rows, criteria.bootstrap, criteria.ci_level, self.seed)

    def measure(self, model: nn.Module, criteria: Criteria | None, retain: dict[str, float] | None = None,
                forget_logits: torch.Tensor | None = None) -> dict[str, float]:
        """The check's measurements; `retain` = retain_stats of this very state when the caller has just read it
        (policy checks pass zeros: the retain probe is the caller's); `forget_logits` likewise."""
        lf = self.forget_logits(model) if forget_logits is None else forget_logits
        m = {"forget_acc": fn.accuracy(lf, self.forget.labels),
             "forget_expected": fn.expected_accuracy(lf, self.forget.labels),
             "forget_conf": float(lf.float().softmax(1).amax(1).mean() * 100) if len(lf) else float("nan"),
             **(self.retain_stats(model) if retain is None else retain)}
        if self.members is not None and criteria is not None:
            lm = self._logits(model, self.members)
            ym, yf = self.members.labels, self.forget.labels
            m.update(bootstrap_membership(
                (lm.argmax(1) == ym).long(), F.cross_entropy(lm, ym, reduction="none"),
                (lf.argmax(1) == yf).long(), F.cross_entropy(lf, yf, reduction="none"),
                criteria.bootstrap, criteria.ci_level, self.seed))
        return m


RETAIN_CHUNK = 128  # rows per read of retain_at_least

