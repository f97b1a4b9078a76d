"""Pure helpers the controller's checks use: eval-mode logits, accuracy, fixed subsamples, a rank AUC."""
from __future__ import annotations

import torch
from torch import nn

from medunlearn.data.imageset import ImageSet


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


def expected_accuracy_pct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean softmax probability of the true label, in percent: the accuracy of the model's own predictive
    distribution (100/K for any label-blind output, whatever the class mix)."""
    from medunlearn.evaluate.functional import true_label_probability

    if len(labels) == 0:
        return 0.0
    return 100.0 * true_label_probability(logits.float().softmax(1), labels)


def subsample(s: ImageSet, n: int, seed: int) -> ImageSet:
    """A fixed random subset of at most n rows (the same on every check)."""
    if len(s) <= n:
        return s
    idx = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed))[:n]
    return s.subset(idx)
