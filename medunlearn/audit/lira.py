"""LiRA: the likelihood-ratio membership score of Carlini et al. (S&P 2022), pure math on score tables.

Conventions (the paper's):
  phi       the logit-scaled confidence of the true class, log p_y − log(1 − p_y) = z_y − logsumexp(z_{≠y})
            (computed from logits so a confident row does not round to ±inf);
  reference models are trained on random halves of the training rows; for each row the models that did not
            see it are its OUT models, those that did its IN models;
  offline   (the paper's §VI-C) only OUT models: the one-sided test statistic (phi − μ_out) / σ_out per row.
            σ_out is the row's own spread shrunk toward the global pooled one with `prior_dof` pseudo-degrees of
            freedom (σ² = (ν0·σ_pool² + (n−1)·s²) / (ν0 + n − 1)): the paper's per-example Gaussians, stabilised
            for the few models an archive can afford (ν0 → ∞ is the paper's "fixed variance"). We divide by
            σ·sqrt(1 + 1/n_out), the predictive spread of a new draw around a mean of n_out draws. ν0 = 4 was
            chosen on a Fashion-MNIST pilot's forget vs VALIDATION rows (TPR at 1 % FPR 6 % vs 2 % with the fixed
            variance; docs/results/consent-audit.md); the calibration rows use as many OUT models as the
            training rows (workflow: a balanced pseudo-half of the models is excluded for them), so every row's
            statistic has the same degrees of freedom;
  online    IN and OUT Gaussians: log N(phi; μ_in, σ_in) − log N(phi; μ_out, σ_out) (global σ's).
Higher scores mean "more member-like". The audit's default is offline: its calibration rows (held-out
patients no model saw) have no IN models, so only the offline score is defined on them and on the forget rows
alike. Every function is pure (tensors in, tensors out) and tested against hand-worked numbers.
"""
from __future__ import annotations

import math

import torch

MIN_SIGMA = 1e-3  # floor on the pooled spread: identical reference scores would otherwise divide by zero
PRIOR_DOF = 4.0  # ν0: pseudo-degrees of freedom of the pooled variance in each row's variance (see above)


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """phi (N,) from logits (N, K) and labels (N,): log p_y − log(1 − p_y), stable for confident rows."""
    logits = logits.double()
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def pooled_sigma(scores: torch.Tensor, mask: torch.Tensor) -> float:
    """Pooled within-row standard deviation of `scores` (M, N) over the entries where `mask` (M, N) is True.

    Each row with n >= 2 selected entries contributes its sum of squared deviations and n − 1 degrees of
    freedom (the unbiased pooled variance). Returns MIN_SIGMA when no row has two entries."""
    m = mask.double()
    n = m.sum(0)
    mean = (scores.double() * m).sum(0) / n.clamp(min=1)
    ss = (((scores.double() - mean) ** 2) * m).sum(0)
    dof = (n - 1).clamp(min=0).sum()
    if dof <= 0:
        return MIN_SIGMA
    return max(float(torch.sqrt(ss[n >= 2].sum() / dof)), MIN_SIGMA)


def out_moments(ref_scores: torch.Tensor, member: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ_out (N,), n_out (N,)): mean phi of each row over the reference models that did NOT see it.

    ref_scores (M, N) float: phi of M reference models on N rows; member (M, N) bool: model m saw row n.
    μ_out is nan where a row has no OUT model."""
    out = (~member).double()
    n_out = out.sum(0)
    mu = (ref_scores.double() * out).sum(0) / n_out
    return mu, n_out


def offline_lira(target: torch.Tensor, ref_scores: torch.Tensor, member: torch.Tensor,
                 sigma: float | None = None, prior_dof: float | None = PRIOR_DOF) -> torch.Tensor:
    """Offline LiRA statistic (N,): (phi_target − μ_out) / (σ_out·sqrt(1 + 1/n_out)); nan where a row has no OUT model.

    target (N,): phi of the audited model; member (M, N): entries excluded from OUT (models that saw the row);
    sigma: the global OUT spread (pooled_sigma over OUT entries when None); prior_dof None: fixed variance."""
    mu, n_out = out_moments(ref_scores, member)
    s: float | torch.Tensor = pooled_sigma(ref_scores, ~member) if sigma is None else float(sigma)
    if prior_dof is not None:
        out = (~member).double()
        ss = (((ref_scores.double() - torch.nan_to_num(mu)) ** 2) * out).sum(0)
        var = (prior_dof * s ** 2 + ss) / (prior_dof + (n_out - 1).clamp(min=0))
        s = torch.sqrt(var).clamp(min=MIN_SIGMA)
    scale = s * torch.sqrt(1.0 + 1.0 / n_out)
    z = (target.double() - mu) / scale
    return torch.where(n_out > 0, z, torch.full_like(z, float("nan")))


def _log_normal(x: torch.Tensor, mu: torch.Tensor, sigma: float) -> torch.Tensor:
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def online_lira(target: torch.Tensor, ref_scores: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Online LiRA log likelihood ratio (N,): log N(phi; μ_in, σ_in) − log N(phi; μ_out, σ_out).

    Global σ_in / σ_out pooled over the IN / OUT entries; nan where a row lacks IN or OUT models."""
    ref = ref_scores.double()
    m_in = member.double()
    n_in, n_out = m_in.sum(0), (1 - m_in).sum(0)
    mu_in = (ref * m_in).sum(0) / n_in.clamp(min=1)
    mu_out = (ref * (1 - m_in)).sum(0) / n_out.clamp(min=1)
    s_in, s_out = pooled_sigma(ref, member), pooled_sigma(ref, ~member)
    lr = _log_normal(target.double(), mu_in, s_in) - _log_normal(target.double(), mu_out, s_out)
    return torch.where((n_in > 0) & (n_out > 0), lr, torch.full_like(lr, float("nan")))


def threshold_at_fpr(nonmember: torch.Tensor, fpr: float) -> float:
    """The smallest score threshold t with at most `fpr` of the non-member scores strictly above it."""
    s = torch.sort(nonmember.double()[~torch.isnan(nonmember.double())], descending=True).values
    if len(s) == 0:
        return float("nan")
    allowed = int(math.floor(fpr * len(s)))  # how many non-members may lie above t
    return float(s[allowed]) if allowed < len(s) else float(s[-1]) - 1.0


def tpr_at_fpr(member: torch.Tensor, nonmember: torch.Tensor, fpr: float) -> tuple[float, float, float]:
    """(TPR, realised FPR, threshold): fraction of `member` scores above the non-members' `fpr` threshold."""
    t = threshold_at_fpr(nonmember, fpr)
    nm = nonmember.double()[~torch.isnan(nonmember.double())]
    mb = member.double()[~torch.isnan(member.double())]
    tpr = float((mb > t).double().mean()) if len(mb) else float("nan")
    return tpr, float((nm > t).double().mean()) if len(nm) else float("nan"), t


def auc(member: torch.Tensor, nonmember: torch.Tensor) -> float:
    """P(member score > non-member score) + half the ties (the attack's ROC AUC, 0..1)."""
    a, b = member.double()[~torch.isnan(member.double())], nonmember.double()[~torch.isnan(nonmember.double())]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    wins = (a[:, None] > b[None, :]).double() + 0.5 * (a[:, None] == b[None, :]).double()
    return float(wins.mean())
