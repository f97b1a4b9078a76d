"""Retrain-free stop rules for the two unlearning goals.

Goals
-----
``suppression``: held-out forget-domain images must lose their predictions. `val_forget` stands in for
    `test_forget` (test data is never touched during unlearning). Stop as soon as accuracy on a fixed
    subsample of val_forget is <= chance + margin, where chance = 100 / K (percent; a model that has
    forgotten a domain should not beat guessing uniformly), or when the method's epoch budget ends.
``equivalence``: look like a model retrained without the forget rows, without having one. A retrained
    model sees the forget rows as it sees any held-out row of their domain, so stop when either
    (a) the running accuracy of the last `window` forget batches (true labels, measured before each
        update) falls to the ORIGINAL model's accuracy on val_forget (calibration.md "stop rule"), or
    (b) loss-based membership inference cannot tell train_forget from val_forget:
        AUC(loss on val_forget > loss on train_forget) <= 0.5 + mia_tol.
    Forget-only objectives over-forget in-distribution forget sets; this rule is what prevents it.

Rules are cheap: they evaluate fixed subsamples (`max_eval` rows) every `check_every` steps, and record
where and why they stopped into ``ctx.log[<method>]["stop"]``.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import torch
from torch import nn

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.errors import ConfigError
from medunlearn.runtime import RunContext


@dataclasses.dataclass
class StopConfig:
    """Stop-rule fields shared by every method's Config."""

    check_every: int = 5  # evaluate the goal's rule every this many optimiser steps
    stop_margin: float = 5.0  # suppression: stop at val_forget accuracy <= 100/K + margin (percent points)
    mia_tol: float = 0.02  # equivalence: stop at loss-MIA AUC(train_forget vs val_forget) <= 0.5 + tol
    window: int = 5  # equivalence: forget batches in the running accuracy
    max_eval: int = 256  # rows per subsample the rules evaluate


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
    return float((logits.argmax(1) == labels.to(logits.device)).float().mean() * 100)


def subsample(s: ImageSet, n: int, seed: int) -> ImageSet:
    """A fixed random subset of at most n rows (the same on every check)."""
    if len(s) <= n:
        return s
    idx = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed))[:n]
    return s.subset(idx)


# ---------------------------------------------------------------- rules
class StopRule:
    """Base rule: `update(step, model, logits, labels) -> True` means stop now."""

    name = "budget"

    def __init__(self, ctx: RunContext, log_key: str, cfg: StopConfig, num_classes: int) -> None:
        if cfg.check_every < 1:
            raise ConfigError(f"Expected check_every >= 1, but got {cfg.check_every}.")
        self.ctx, self.cfg, self.k = ctx, cfg, num_classes
        self.log = ctx.log.setdefault(log_key, {})
        self.record: dict[str, Any] = {"goal_rule": self.name, "checks": []}
        self.log["stop"] = self.record
        self.stopped = False

    def update(self, step: int, model: nn.Module, logits: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> bool:
        return False

    def stop(self, step: int, reason: str, **values: float) -> bool:
        self.stopped = True
        self.record.update({"step": step, "reason": reason, **values})
        return True

    def finish(self, step: int, reason: str = "step budget reached") -> None:
        """Called by the method's loop at its end; records the budget stop if the rule never fired."""
        if not self.stopped:
            self.record.update({"step": step, "reason": reason})


class SuppressionStop(StopRule):
    """Stop when val_forget accuracy (subsample) <= 100/K + stop_margin."""

    name = "suppression"

    def __init__(self, ctx: RunContext, log_key: str, cfg: StopConfig, data: SplitData) -> None:
        super().__init__(ctx, log_key, cfg, data.num_classes)
        held = data.val_forget
        self.record["heldout"] = "val_forget"
        if len(held) == 0:  # no held-out forget rows: fall back to the forget rows themselves
            held, self.record["heldout"] = data.train_forget, "train_forget (val_forget is empty)"
        self.held = subsample(held, cfg.max_eval, ctx.seed)
        self.target = 100.0 / self.k + cfg.stop_margin
        self.record["target_acc"] = self.target

    def update(self, step, model, logits=None, labels=None) -> bool:
        if step % self.cfg.check_every:
            return False
        acc = accuracy_pct(predict_logits(model, self.held.images, self.k, self.ctx.device), self.held.labels)
        self.record["checks"].append([step, round(acc, 3)])
        if acc <= self.target:
            return self.stop(step, f"val_forget accuracy {acc:.1f}% <= chance + margin {self.target:.1f}%",
                             val_forget_acc=acc)
        return False


class EquivalenceStop(StopRule):
    """Stop when the running forget-batch accuracy reaches the original model's val_forget accuracy,
    or when loss-MIA AUC(train_forget vs val_forget) <= 0.5 + mia_tol."""

    name = "equivalence"

    def __init__(self, ctx: RunContext, log_key: str, cfg: StopConfig, data: SplitData, original: nn.Module) -> None:
        super().__init__(ctx, log_key, cfg, data.num_classes)
        self.forget = subsample(data.train_forget, cfg.max_eval, ctx.seed)
        self.held = subsample(data.val_forget, cfg.max_eval, ctx.seed + 1)
        self.use_mia = len(self.held) > 0
        ref = self.held if self.use_mia else subsample(data.val, cfg.max_eval, ctx.seed)
        self.target = accuracy_pct(predict_logits(original, ref.images, self.k, ctx.device), ref.labels)
        self.record["target_acc"] = self.target
        self.record["target_from"] = "original on val_forget" if self.use_mia else "original on val (no val_forget)"
        self.recent: deque[tuple[int, int]] = deque(maxlen=max(1, cfg.window))

    def mia_auc(self, model: nn.Module) -> float:
        """AUC of 'held-out loss > forget loss'; 0.5 = indistinguishable."""
        ce = nn.functional.cross_entropy
        lf = ce(predict_logits(model, self.forget.images, self.k, self.ctx.device), self.forget.labels, reduction="none")
        lh = ce(predict_logits(model, self.held.images, self.k, self.ctx.device), self.held.labels, reduction="none")
        return auc_higher(lf, lh)

    def update(self, step, model, logits=None, labels=None) -> bool:
        if logits is not None and labels is not None:
            hits = int((logits.detach()[:, :self.k].argmax(1) == labels).sum())
            self.recent.append((hits, len(labels)))
        if step % self.cfg.check_every:
            return False
        full = len(self.recent) == self.recent.maxlen
        run_acc = 100.0 * sum(h for h, _ in self.recent) / max(1, sum(n for _, n in self.recent))
        check: list[float] = [step, round(run_acc, 3)]
        if full and run_acc <= self.target:
            return self.stop(step, f"running forget accuracy {run_acc:.1f}% <= original val_forget "
                                   f"accuracy {self.target:.1f}%", running_forget_acc=run_acc)
        if self.use_mia:
            auc = self.mia_auc(model)
            check.append(round(auc, 4))
            if auc <= 0.5 + self.cfg.mia_tol:
                self.record["checks"].append(check)
                return self.stop(step, f"loss-MIA AUC {auc:.3f} <= 0.5 + {self.cfg.mia_tol}", mia_auc=auc)
        self.record["checks"].append(check)
        return False


def make_stop_rule(goal: str, cfg: StopConfig, data: SplitData, original: nn.Module, ctx: RunContext,
                   log_key: str) -> StopRule:
    """The goal's rule: SuppressionStop or EquivalenceStop (cfg supplies the knobs)."""
    if goal == "suppression":
        return SuppressionStop(ctx, log_key, cfg, data)
    if goal == "equivalence":
        return EquivalenceStop(ctx, log_key, cfg, data, original)
    raise ConfigError(f"Expected goal in ['suppression', 'equivalence'], but got {goal!r}.")
