"""FAMR's deviation report ("certificate"): the bounds that hold on the returned state, and measurements."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from medunlearn.data.imageset import ImageSet
from medunlearn.unlearn.famr_math import _chunks, forget_objective, kl_u_p
from medunlearn.unlearn.probes import subsample


@torch.no_grad()
def _logits_at(model: nn.Module, params: dict, images: torch.Tensor, dev: torch.device, bs: int = 256) -> torch.Tensor:
    return torch.cat([functional_call(model, params, (x.to(dev),)).float().cpu() for x in _chunks(images, bs)])


@torch.no_grad()
def certificate(model: nn.Module, names: list[str], theta0: dict, data, loss: str, mask: torch.Tensor,
                floor: float, lam: float, lf0: float, grad0_norm: float, dev: torch.device, rows: int,
                seed: int) -> dict:
    """What can be said about the returned θ_S against θ0_S (model in eval mode).

    `bounds` holds only statements that are bounds: the a-priori ‖Δθ‖ bound, whose one condition
    (J(θ) <= J(θ0)) is checked on the returned state, and the convex bound, which is a bound only if its
    assumption holds (not verified for a deep network: reported for comparison, flagged as such).
    `measured` holds observed quantities (distances, probability changes, flips, secant slopes): measurements,
    not guarantees. None of it is a formal privacy guarantee.
    """
    now = dict(model.named_parameters())
    delta = {n: now[n].detach() - theta0[n] for n in names}
    dnorm = math.sqrt(sum(float((d ** 2).sum()) for d in delta.values()))
    forget = data.train_forget.images
    lf1 = forget_objective(model, forget, loss, mask, dev)
    kl = lambda prm: float(kl_u_p(_logits_at(model, prm, forget, dev), mask.cpu()).mean())  # noqa: E731
    theta1 = {n: now[n].detach() for n in names}
    j1 = lf1 + 0.5 * lam * dnorm ** 2
    apriori = math.sqrt(2 * max(lf0 - floor, 0.0) / lam)
    out: dict = {
        "label": "bounds under stated assumptions and measurements; not a formal privacy guarantee",
        "lam": lam, "L_min": floor,
        "bounds": {
            "apriori_delta_norm": {"value": apriori, "condition": "J(θ) <= J(θ0)",
                                   "condition_holds": bool(j1 <= lf0 + 1e-9),
                                   "holds": bool(j1 <= lf0 + 1e-9 and dnorm <= apriori + 1e-9)},
            "convex_delta_norm": {"value": grad0_norm / lam, "assumes": "L_f convex in θ_S and θ a minimiser of J",
                                  "assumption_verified": False},
        },
        "measured": {
            "delta_norm": dnorm, "delta_norm_per_tensor": {n: float(d.norm()) for n, d in delta.items()},
            "L_f_before": lf0, "L_f_after": lf1, "J_before": lf0, "J_after": j1,
            "kl_u_p_before": kl(theta0), "kl_u_p_after": kl(theta1), "grad_norm_theta0": grad0_norm,
        },
    }
    for split, imgs in (("retain", subsample(data.train_retain, rows, seed).images),
                        ("val", _val_rows(data, rows, seed).images)):
        if len(imgs) == 0:
            continue
        l0, l1 = _logits_at(model, theta0, imgs, dev), _logits_at(model, theta1, imgs, dev)
        change = (l1.softmax(1) - l0.softmax(1)).abs().amax(1)
        rec = {"max_prob_change": float(change.max()), "mean_prob_change": float(change.mean()),
               "flipped_frac": float((l1.argmax(1) != l0.argmax(1)).float().mean())}
        if split == "retain" and dnorm > 0:
            # secant slope of the logit map from θ0 to θ (a measurement along one segment, not a Lipschitz bound)
            slope = (l1 - l0).norm(dim=1) / dnorm
            rec.update({"secant_slope_max": float(slope.max()), "secant_slope_median": float(slope.median())})
        out["measured"][split] = rec
    return out


def _val_rows(data, rows: int, seed: int):
    """At most `rows` validation rows, stratified by part (val_retain, val_forget) in proportion to their sizes;
    only the drawn rows are read (a prefix-cached run encodes nothing else)."""
    n_r, n_f = len(data.val_retain), len(data.val_forget)
    take_r = n_r if n_r + n_f <= rows else round(rows * n_r / (n_r + n_f))
    take_f = n_f if n_r + n_f <= rows else rows - take_r
    return ImageSet.concat([subsample(data.val_retain, take_r, seed), subsample(data.val_forget, take_f, seed + 1)])
