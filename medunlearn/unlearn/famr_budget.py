"""famr_budget: famr_retain at a cost that does not grow with the archive — an EXTENSION, not the paper's method.

The update is famr_retain's (unlearn/famr_retain.py): on a forget batch the uniform-prediction loss, on a retain
batch KL(f0(x_r) ‖ fθ(x_r)) (the original's full softmax at T = 1, so the step keeps retain *confidence*, which
criterion (d) reads, not only the argmax), plus FAMR's anchor (λ/2)‖θ_S − θ0_S‖². What differs is the cost:
  - the budget is `steps` optimiser steps, a constant (famr: `epochs` passes over D_f, so 4x the forget rows is
    4x the steps); `epochs` still caps it on a tiny forget set;
  - every read of D_f that is not a training batch uses one fixed seeded sample of `sample_rows` train_forget
    rows: L_f(θ0) for λ (the deviation budget), ∇L_f(θ0) and L_f / KL(u‖p) before and after in the certificate
    (famr reads the whole forget set three times and back-propagates through it once);
  - the teacher's softmax is computed once on a fixed pool of `distil_rows` train_retain rows and each step's
    retain batch is drawn from that pool (famr_retain runs the teacher on every retain batch).
Conventions (named because they depart from famr / famr_retain): λ = 2(L̂_f(θ0) − L_min)/budget² with L̂_f the
sample mean; the certificate's a-priori bound and its condition J(θ) ≤ J(θ0) are judged on that sample (an
estimate of the full-set statement, said in the certificate); only the iterative solver; by default only the
last three blocks train (params last-3, on the frozen prefix's cached outputs) under a weaker anchor (budget
20). Where the defaults come
from: configs/unlearn/famr_budget.yaml (validation rows only; docs/results/domain-cost.md).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from medunlearn.bounds import bounded
from medunlearn.errors import ConfigError
from medunlearn.evaluate.functional import predict
from medunlearn.models.zoo import parameter_subset
from medunlearn.unlearn.base import METHODS
from medunlearn.unlearn.famr import validate
from medunlearn.unlearn.famr_certificate import certificate
from medunlearn.unlearn.famr_math import (
    forget_gradient,
    forget_objective,
    loss_floor,
    resolve_lam,
    support_mask,
    uniform_loss,
)
from medunlearn.unlearn.famr_retain import FAMRRetain, FAMRRetainConfig
from medunlearn.unlearn.probes import subsample
from medunlearn.unlearn.space import Float, Int
from medunlearn.unlearn.streams import n_steps
from medunlearn.unlearn.types import Plan


@dataclasses.dataclass
class FAMRBudgetConfig(FAMRRetainConfig):
    # inherited fields with this method's own defaults (ControlConfig / FAMRConfig knobs; see the YAML's notes)
    lr: float = 5e-4
    retain_weight: float = 3.0
    max_eval: int = 256  # rows per validation probe: half famr's, fixed whatever the archive size
    check_every: int = 8
    patience: int = 1  # checks after the first met state (famr: 3)
    cert_rows: int = 256
    params: str = "last-3"  # the last three blocks (on allcnn ≈ 39 % of its FLOPs; the frozen prefix is cached)
    budget: float = 20.0  # FAMR's anchor budget B (λ from it): a weaker anchor than famr's 5
    steps: int = bounded(300, 1)  # the step budget, whatever the forget set's size (epochs still caps it: a tiny D_f)
    sample_rows: int = bounded(256, 1)  # fixed train_forget sample for λ, ∇L_f(θ0) and the certificate's forget figures
    distil_rows: int = bounded(512, 1)  # fixed train_retain pool: the teacher's softmax on it is computed once


def validate_budget(cfg: FAMRBudgetConfig) -> None:
    validate(cfg)
    if cfg.solver != "iterative":
        raise ConfigError(f'Expected solver="iterative" for famr_budget (its budget is in steps), but got '
                          f"{cfg.solver!r}; the closed-form solvers are famr's.")


@METHODS.register("famr_budget")
class FAMRBudget(FAMRRetain):
    name = "famr_budget"
    summary = ("famr_retain at a fixed cost: a step budget, λ, teacher and certificate on fixed-size samples "
               "(extension, not the paper's method)")
    Config = FAMRBudgetConfig
    search_space = {"lr": Float(1e-4, 1e-2, log=True), "retain_weight": Float(0.1, 10.0, log=True),
                    "steps": Int(20, 600), "budget": Float(1.0, 50.0, log=True)}  # what `medunlearn tune` varies

    def plan(self, model, original, data, ctx, goal) -> Plan:
        validate_budget(self.config)
        cfg, dev, k = self.config, ctx.device, data.num_classes
        mask = support_mask(cfg.support, data.train_forget.labels, k).to(dev)
        floor = loss_floor(cfg.loss, mask)
        model.eval()  # BN statistics and dropout frozen, as in famr
        subset = parameter_subset(model, cfg.params)
        names, params = [n for n, _ in subset], [p for _, p in subset]
        theta0 = {n: p.detach().clone() for n, p in subset}
        for n, p in model.named_parameters():
            p.requires_grad_(n in theta0)
        sample = subsample(data.train_forget, cfg.sample_rows, ctx.seed + 3)
        lf0 = forget_objective(model, sample.images, cfg.loss, mask, dev)
        lam, lam_source = resolve_lam(cfg.lam, cfg.budget, lf0, floor)
        grad0 = forget_gradient(model, params, sample.images, cfg.loss, mask, dev)
        g0_norm = math.sqrt(sum(float((g ** 2).sum()) for g in grad0))
        del grad0
        log = ctx.log.setdefault(self.name, {})
        log.update({"lam": lam, "lam_source": lam_source, "solver": "iterative", "params": cfg.params,
                    "n_params_updated": sum(p.numel() for p in params), "sample_rows": len(sample)})
        view = dataclasses.replace(data, train_forget=sample)  # what the certificate reads of D_f

        def finalize(m: nn.Module) -> nn.Module:
            cert = certificate(m, names, theta0, view, cfg.loss, mask, floor, lam, lf0, g0_norm, dev, cfg.cert_rows,
                               ctx.seed)
            cert["forget_rows"] = f"a fixed sample of {len(sample)} train_forget rows (famr_budget's convention)"
            log["certificate"] = cert
            return m

        gen = torch.Generator().manual_seed(ctx.rank_seed + 5)
        forget = data.train_forget
        pool = subsample(data.train_retain, cfg.distil_rows, ctx.seed + 4)
        teacher = predict(original, pool.images, device=dev, num_classes=k).softmax(1) \
            if cfg.retain_weight > 0 and len(pool) else None
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=0.0)
        bs = cfg.batch_size

        def update(t: int) -> float:
            idx = torch.randint(len(forget), (min(bs, len(forget)),), generator=gen)
            x = forget.take(idx).to(dev)  # only these rows (a cached prefix encodes just them)
            anchor = sum(((p - theta0[n]) ** 2).sum() for n, p in zip(names, params))
            loss = uniform_loss(model(x), cfg.loss, mask).mean() + 0.5 * lam * anchor
            if teacher is not None:
                j = torch.randint(len(pool), (min(bs, len(pool)),), generator=gen)
                student = F.log_softmax(model(pool.images[j].to(dev))[:, :k].float(), 1)
                loss = loss + cfg.retain_weight * F.kl_div(student, teacher[j].to(dev), reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        budget = min(cfg.steps, n_steps(len(forget), bs, cfg.epochs))
        rows = 3 * bs * (2 if teacher is not None else 1)
        return Plan(update, budget, rows_per_step=rows, finalize=finalize, params=params, optimizer=opt)

