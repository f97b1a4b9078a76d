"""FAMR: Forget-Aligned Model Reconstruction (Sanga et al., arXiv 2506.14515), anchored uniform forgetting.

    J(θ) = L_f(θ) + (λ/2)‖θ_S − θ0_S‖²,   L_f = mean_{x∈D_f} ℓ_u(θ; x)
ℓ_u: "ce_uniform" CE(u, p) = KL(u‖p) + log|U| (default; bounded logit gradient p_k − u_k) or "kl_p_u"
KL(p‖u) = log K − H(p). Uniform support U: "all" K classes, or "remaining" = the classes ABSENT from the
forget set (class forgetting: forget accuracy then goes to 0 as with a retrained model); "remaining" is an
error when the forget set contains every class (a device/site forget set), use "all" there.
S = `params` via zoo.parameter_subset. FAMR proper (retain_weight=0) should use "head": an isotropic anchor
on ALL parameters lets a uniform-prediction objective rewrite shared features and collapse retain accuracy
(calibration.md: 18–83 %), while the head-only variant retained (Avg-Gap 1.68). medunlearn's DEFAULT is the
named extension params="all" + retain_weight=1 (an output anchor KL(f0‖fθ) on paired retain batches): on the
synthetic device-deprecation cohort head-only FAMR left held-out ScannerX accuracy at 97 % (a device shares
the classes' features, so the head cannot single it out) and all-parameter FAMR proper collapsed retain
accuracy to 30 %, while the extension kept retain accuracy at ~90 % and flattened ScannerX confidence. BatchNorm/Dropout in eval mode; Adam with weight
decay 0 (decay pulls toward 0, not toward θ0). λ from a deviation budget when `lam` is None:
λ = 2(L_f(θ0) − L_min)/budget², so the a-priori bound below equals `budget`.
Goal note: with support "all" FAMR flattens forget-domain confidence (KL(u‖p) -> 0) but need not flip
the argmax, so on a forget domain that shares the retain classes' features (device/site) its accuracy can
stay high; suppression by argmax needs support "remaining" (class forgetting) or a boundary method.
Solvers: iterative (Adam on J), one_step θ0 − ∇L_f(θ0)/λ, newton_cg θ0 − (H_f + λI)^{-1}∇L_f(θ0) by
conjugate gradient on double-backward Hessian-vector products. The certificate goes to
ctx.log["famr"]["certificate"]: bounds under stated assumptions, not a formal privacy guarantee.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from medunlearn.errors import ConfigError, DataError
from medunlearn.registry import did_you_mean
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner, check_finite_loss, cycle, n_steps
from medunlearn.unlearn.stopping import StopConfig, make_stop_rule, subsample

LOSSES = ("ce_uniform", "kl_p_u")
SUPPORTS = ("all", "remaining")
SOLVERS = ("iterative", "one_step", "newton_cg")


@dataclasses.dataclass
class FAMRConfig(BaseConfig, StopConfig):
    """FAMR hyperparameters (suggested defaults, not the paper's)."""

    epochs: float = 30.0  # iterative solver budget in passes over D_f
    batch_size: int = 64
    lr: float = 1e-3  # Adam learning rate (weight decay 0)
    loss: str = "ce_uniform"  # ce_uniform | kl_p_u
    support: str = "all"  # all | remaining (classes absent from the forget set)
    params: str = "all"  # all | head | last-N  (the anchored, trainable subset S); see module docstring
    lam: Optional[float] = None  # anchor weight λ; None = derive from `budget`
    budget: float = 5.0  # target ‖Δθ_S‖ (L2) when lam is None: λ = 2(L_f(θ0) − L_min)/budget²
    solver: str = "iterative"  # iterative | one_step | newton_cg
    tol: float = 0.005  # stop when the batch mean KL(u‖p) <= tol
    cg_iters: int = 10  # newton_cg: conjugate-gradient iterations
    cg_rows: int = 512  # newton_cg: forget rows used for the gradient and Hessian-vector products
    cert_rows: int = 1024  # rows of train_retain / val used for the certificate
    # EXTENSION, not in FAMR proper (which relies on the anchor alone): φ_r · KL(f0(x_r) ‖ fθ(x_r)) on paired
    # retain batches, an output anchor on D_r. 0 = FAMR proper. Needed when the forget domain shares the
    # retain classes' features (device / site forgetting); see the module docstring.
    retain_weight: float = 1.0


# ---------------------------------------------------------------- pure math
def support_mask(support: str, forget_labels: torch.Tensor, k: int) -> torch.Tensor:
    """(K,) bool mask of the uniform target's classes."""
    if support == "all":
        return torch.ones(k, dtype=torch.bool)
    mask = torch.ones(k, dtype=torch.bool)
    mask[forget_labels.unique()] = False
    if not bool(mask.any()):
        raise ConfigError('Expected support="remaining" only when the forget set lacks some class (class '
                          'forgetting), but the forget set contains every class; use support="all".')
    return mask


def loss_floor(loss: str, mask: torch.Tensor) -> float:
    """L_min: log|U| for ce_uniform, 0 for kl_p_u."""
    return math.log(int(mask.sum())) if loss == "ce_uniform" else 0.0


def uniform_loss(logits: torch.Tensor, loss: str, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample ℓ_u, (B, K) -> (B,)."""
    logp = F.log_softmax(logits.float(), 1)
    if loss == "ce_uniform":
        return -(logp * mask).sum(1) / mask.sum()
    return (logp.exp() * logp).sum(1) + math.log(logits.shape[1])


def kl_u_p(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(u‖p) with u uniform on the mask, (B, K) -> (B,)."""
    logp = F.log_softmax(logits.float(), 1)
    return -(logp * mask).sum(1) / mask.sum() - math.log(int(mask.sum()))


def _chunks(images: torch.Tensor, bs: int):
    for i in range(0, len(images), bs):
        yield images[i:i + bs]


@torch.no_grad()
def forget_objective(model: nn.Module, images: torch.Tensor, loss: str, mask: torch.Tensor,
                     dev: torch.device, params: dict | None = None, bs: int = 256) -> float:
    """L_f = mean ℓ_u over images (N, C, H, W); `params` overrides named parameters (functional_call)."""
    total = 0.0
    for x in _chunks(images, bs):
        out = functional_call(model, params, (x.to(dev),)) if params else model(x.to(dev))
        total += float(uniform_loss(out, loss, mask).sum())
    return total / max(1, len(images))


def forget_gradient(model: nn.Module, params: list[nn.Parameter], images: torch.Tensor, loss: str,
                    mask: torch.Tensor, dev: torch.device, bs: int = 256) -> list[torch.Tensor]:
    """∇_θS L_f over all of `images`."""
    grads = [torch.zeros_like(p) for p in params]
    for x in _chunks(images, bs):
        part = uniform_loss(model(x.to(dev)), loss, mask).sum() / len(images)
        for g, d in zip(grads, torch.autograd.grad(part, params)):
            g += d
    return grads


def hvp_fn(model: nn.Module, params: list[nn.Parameter], images: torch.Tensor, loss: str, mask: torch.Tensor,
           dev: torch.device, bs: int):
    """v -> H_f v by double backward over `images` (chunked)."""

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [torch.zeros_like(p) for p in params]
        for x in _chunks(images, bs):
            part = uniform_loss(model(x.to(dev)), loss, mask).sum() / len(images)
            g = torch.autograd.grad(part, params, create_graph=True)
            dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
            for o, h in zip(out, torch.autograd.grad(dot, params)):
                o += h
        return out

    return hvp


def conjugate_gradient(hvp, b: list[torch.Tensor], lam: float, iters: int, rtol: float = 1e-4):
    """Solve (H + λI) x = b by CG; stops early on convergence or non-positive curvature. -> (x, iterations)."""
    dot = lambda a, c: sum(float((ai * ci).sum()) for ai, ci in zip(a, c))  # noqa: E731
    x = [torch.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rr, b_norm, done = dot(r, r), math.sqrt(dot(b, b)), 0
    for done in range(1, max(1, iters) + 1):
        ap = [h + lam * pi for h, pi in zip(hvp(p), p)]
        pap = dot(p, ap)
        if pap <= 0:  # negative curvature: keep the iterate so far (truncated Newton)
            break
        alpha = rr / pap
        x = [xi + alpha * pi for xi, pi in zip(x, p)]
        r = [ri - alpha * ai for ri, ai in zip(r, ap)]
        rr_new = dot(r, r)
        if math.sqrt(rr_new) <= rtol * b_norm:
            break
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p)]
        rr = rr_new
    return x, done


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"Expected {key} in {list(choices)}, but got {value!r}.{did_you_mean(value, list(choices))}")


def resolve_lam(cfg: FAMRConfig, lf0: float, floor: float) -> tuple[float, str]:
    """λ and where it came from ("given" | "budget")."""
    if cfg.lam is not None and str(cfg.lam).lower() not in ("none", "null", ""):
        try:
            lam = float(cfg.lam)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Expected lam to be a positive number or null, but got {cfg.lam!r}.") from exc
        if not lam > 0 or not math.isfinite(lam):
            raise ConfigError(f"Expected lam > 0, but got {cfg.lam!r}.")
        return lam, "given"
    if not cfg.budget > 0:
        raise ConfigError(f"Expected budget > 0 when lam is null, but got {cfg.budget}.")
    return 2.0 * max(lf0 - floor, 1e-12) / cfg.budget ** 2, "budget"


@METHODS.register("famr")
class FAMR(Unlearner):
    name = "famr"
    summary = "Anchored uniform forgetting: min L_uniform(D_f) + (λ/2)||θ_S − θ0_S||², with a bound certificate"
    Config = FAMRConfig

    def _run(self, model, original, data, ctx, goal):
        from medunlearn.models.zoo import parameter_subset

        cfg, dev, k = self.config, ctx.device, data.num_classes
        _choice(cfg.loss, LOSSES, "loss")
        _choice(cfg.support, SUPPORTS, "support")
        _choice(cfg.solver, SOLVERS, "solver")
        if len(data.train_forget) == 0:
            raise DataError("Expected at least one forget image, but got an empty forget set.")
        if cfg.loss == "kl_p_u" and cfg.support != "all":
            raise ConfigError('Expected support="all" with loss="kl_p_u" (KL(p‖u) is infinite off the support), '
                              f"but got support={cfg.support!r}.")
        mask = support_mask(cfg.support, data.train_forget.labels, k).to(dev)
        floor = loss_floor(cfg.loss, mask)
        model.eval()  # BN statistics and dropout frozen: forget-only batches must not move them
        subset = parameter_subset(model, cfg.params)
        names = [n for n, _ in subset]
        params = [p for _, p in subset]
        theta0 = {n: p.detach().clone() for n, p in subset}
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.requires_grad_(n in theta0)
        forget = data.train_forget
        lf0 = forget_objective(model, forget.images, cfg.loss, mask, dev)
        lam, lam_source = resolve_lam(cfg, lf0, floor)
        log = ctx.log.setdefault(self.name, {})
        log.update({"lam": lam, "lam_source": lam_source, "solver": cfg.solver, "params": cfg.params,
                    "n_params_updated": sum(p.numel() for p in params)})
        rule = make_stop_rule(goal, cfg, data, original, ctx, self.name)
        grad0 = forget_gradient(model, params, forget.images, cfg.loss, mask, dev)
        g0_norm = math.sqrt(sum(float((g ** 2).sum()) for g in grad0))
        step = 0
        if cfg.solver == "iterative":
            step = self._iterate(model, original, names, params, theta0, lam, mask, data, ctx, rule)
        else:
            if cfg.solver == "one_step":
                step_vec = [g / lam for g in grad0]
            else:
                rows = subsample(forget, cfg.cg_rows, ctx.seed).images
                hvp = hvp_fn(model, params, rows, cfg.loss, mask, dev, cfg.batch_size)
                step_vec, iters = conjugate_gradient(hvp, grad0, lam, cfg.cg_iters)
                log["cg_iterations"] = iters
            with torch.no_grad():
                for p, n, s in zip(params, names, step_vec):
                    p.copy_(theta0[n] - s)
            rule.stop(1, f"closed-form {cfg.solver} step")
        rule.finish(step)
        log.update({"steps": step, "stop_reason": rule.record.get("reason", "")})
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        log["certificate"] = certificate(model, names, theta0, data, cfg.loss, mask, floor, lam, lf0,
                                         g0_norm, dev, cfg.cert_rows, ctx.seed)
        return model

    def _iterate(self, model, original, names, params, theta0, lam, mask, data, ctx, rule) -> int:
        cfg, dev = self.config, ctx.device
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=0.0)
        total = n_steps(len(data.train_forget), cfg.batch_size, cfg.epochs)
        it = cycle(data.train_forget.loader(cfg.batch_size, shuffle=True, seed=ctx.rank_seed))
        use_retain = cfg.retain_weight > 0 and len(data.train_retain) > 0
        if use_retain:
            teacher = copy.deepcopy(original).to(dev).eval()  # never touch the caller's model
            retain_it = cycle(data.train_retain.loader(cfg.batch_size, shuffle=True, seed=ctx.rank_seed + 1))
        step = 0
        for step in range(1, total + 1):
            batch = next(it)
            x, y = batch["image"].to(dev), batch["label"].to(dev)
            logits = model(x)
            lf = uniform_loss(logits, cfg.loss, mask).mean()
            anchor = sum(((p - theta0[n]) ** 2).sum() for n, p in zip(names, params))
            loss = lf + 0.5 * lam * anchor
            if use_retain:
                xr = next(retain_it)["image"].to(dev)
                with torch.no_grad():
                    target = F.softmax(teacher(xr).float(), 1)
                loss = loss + cfg.retain_weight * F.kl_div(F.log_softmax(model(xr).float(), 1), target,
                                                           reduction="batchmean")
            check_finite_loss(loss, self.name, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            kl = float(kl_u_p(logits.detach(), mask).mean())
            if kl <= cfg.tol:
                rule.stop(step, f"mean KL(u||p) {kl:.4f} <= tol {cfg.tol}", kl=kl)
                break
            if rule.update(step, model, logits, y):
                break
        return step


# ---------------------------------------------------------------- certificate
@torch.no_grad()
def _logits_at(model: nn.Module, params: dict, images: torch.Tensor, dev: torch.device, bs: int = 256) -> torch.Tensor:
    return torch.cat([functional_call(model, params, (x.to(dev),)).float().cpu() for x in _chunks(images, bs)])


@torch.no_grad()
def certificate(model: nn.Module, names: list[str], theta0: dict, data, loss: str, mask: torch.Tensor,
                floor: float, lam: float, lf0: float, grad0_norm: float, dev: torch.device, rows: int,
                seed: int) -> dict:
    """Parameter/output deviation report for the model's current θ_S against θ0_S (model in eval mode)."""
    now = dict(model.named_parameters())
    delta = {n: now[n].detach() - theta0[n] for n in names}
    dnorm = math.sqrt(sum(float((d ** 2).sum()) for d in delta.values()))
    forget = data.train_forget.images
    lf1 = forget_objective(model, forget, loss, mask, dev)
    kl = lambda prm: float(kl_u_p(_logits_at(model, prm, forget, dev), mask.cpu()).mean())  # noqa: E731
    theta1 = {n: now[n].detach() for n in names}
    j1 = lf1 + 0.5 * lam * dnorm ** 2
    out: dict = {
        "label": "bounds under stated assumptions, not a formal privacy guarantee",
        "lam": lam, "L_min": floor, "L_f_before": lf0, "L_f_after": lf1,
        "kl_u_p_before": kl(theta0), "kl_u_p_after": kl(theta1), "J_before": lf0, "J_after": j1,
        "delta_norm": dnorm, "delta_norm_per_tensor": {n: float(d.norm()) for n, d in delta.items()},
        "bound_apriori": math.sqrt(2 * max(lf0 - floor, 0.0) / lam),
        "bound_apriori_assumes": "J(θ) <= J(θ0) (true at any minimiser of J; checked below)",
        "bound_apriori_applies": j1 <= lf0 + 1e-9,
        "bound_convex": grad0_norm / lam, "bound_convex_assumes": "L_f convex in θ_S, θ a minimiser of J",
        "grad_norm_theta0": grad0_norm,
    }
    for split, imgs in (("retain", subsample(data.train_retain, rows, seed).images),
                        ("val", subsample(data.val, rows, seed).images)):
        if len(imgs) == 0:
            continue
        l0, l1 = _logits_at(model, theta0, imgs, dev), _logits_at(model, theta1, imgs, dev)
        change = (l1.softmax(1) - l0.softmax(1)).abs().amax(1)
        flipped = l1.argmax(1) != l0.argmax(1)
        rec = {"max_prob_change": float(change.max()), "mean_prob_change": float(change.mean()),
               "flipped_frac": float(flipped.float().mean())}
        if split == "retain":
            # secant slopes of the logit map along the segment θ0 -> θ0 + Δθ (finite differences)
            g = torch.zeros(len(imgs))
            for t in (0.01, 0.5, 1.0):
                lt = l1 if t == 1.0 else _logits_at(model, {n: theta0[n] + t * delta[n] for n in names}, imgs, dev)
                g = torch.maximum(g, (lt - l0).norm(dim=1) / max(t * dnorm, 1e-12))
            top2 = l0.topk(2, dim=1).values
            certified = (top2[:, 0] - top2[:, 1]) > 2 * g * dnorm
            rec.update({"lipschitz_max": float(g.max()), "lipschitz_median": float(g.median()),
                        "certified_unflippable_frac": float(certified.float().mean()),
                        "certified_but_flipped": int((certified & flipped).sum()),
                        "certified_assumes": "the logit map is G-Lipschitz along Δθ with G the sampled secant max"})
        out[split] = rec
    return out
