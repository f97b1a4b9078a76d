"""Learned merge coefficients (AdaMerging-style, Yang et al. 2024), fitted to the policies' criteria.

θ(λ) = θ0 + Σ_i Σ_g λ_{i,g} · τ_{i,g},   λ_{i,g} = c_max · sigmoid(z_{i,g}) ∈ [0, c_max]
with τ_i = θ_i − θ0 split into groups g: one per layer (module: weight and bias together), per tensor, or one
per run. Only the coefficients z are learned (Adam), never the weights. With ``sign_split`` (after NegMerge,
Kim et al. ICML 2025, which keeps only sign-consensual entries of several forgetting vectors), each group has
two coefficients: one for the entries whose change every run agrees on in sign (or only one run changed), one
for the conflicting entries, where summing runs cancels each other's forgetting.

Objective, on VALIDATION rows by default (fixed seeded subsets; test rows are never read; ``fit_on="train"``: the
train rows instead, train_forget per policy and the union's train_retain, so the acceptance below is judged on rows
the fit never saw; the validation default fits and judges on the same rows, an optimistic verdict: see
docs/results/merge-synthetic.md, "Retain confidence"):
  Σ_p forget_p(θ) + retain_weight · KL(f_θ0(x_r) ‖ f_θ(x_r))   over x_r = val rows no policy forgets;
forget_p ("criteria" objective) is the surrogate of policy p's criteria on its val_forget rows: for a
suppressed domain the cross-entropy to the uniform distribution (accuracy to chance, confidence down); for a
removed class −log(1 − p_y) (its images must never be called it); for the equivalence goal
KL(f_run_p(x) ‖ f_θ(x)): reproduce what the policy's own run does (the objective follows each policy's goal).
Every ``check_every`` steps the policies' acceptance (judging.assess) is measured; the kept coefficients are
those of the checked state that meets the most (smallest total violation, then highest retain accuracy). Once a
checked state meets every criterion, the fit stops after ``patience`` further checks that find none better.
The record {coefficients, groups, checks, steps_run, chosen_step} goes to ctx.log["learned_coefficients"].
The fit (`Fit`: a `Plan` of Adam steps) keeps its own check, keep-best and patience instead of running under the
unlearning controller: it judges every policy on its own probes and ranks met and unmet states on one scale,
where the controller judges one split's criteria, keeps a met state by retain and an unmet one retain guard first.
BatchNorm running stats: the shared buffer rules (``bn_stats``), fixed while fitting.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from medunlearn.errors import ConfigError
from medunlearn.merge import policies
from medunlearn.merge.base import (
    MERGES,
    MergeConfig,
    MergeEnv,
    MergeMethod,
    StateDict,
    check_choice,
    check_range,
    deltas,
    merge_buffers,
)
from medunlearn.unlearn.judging import removed_classes
from medunlearn.unlearn.probes import subsample
from medunlearn.unlearn.types import Plan

GRANULARITIES = ("layer", "tensor", "run")
FIT_ROWS = ("val", "train")


@dataclasses.dataclass
class LearnedCoefficientsConfig(MergeConfig):
    granularity: str = "layer"  # one coefficient per run and layer | tensor | run
    sign_split: bool = True  # separate coefficients for sign-agreeing and conflicting entries (NegMerge idea)
    c_max: float = 2.0  # upper bound of every coefficient (lower bound 0)
    init: float = 1.0  # starting coefficient (1 = task arithmetic: each run's full change)
    steps: int = 60  # Adam steps on the coefficients
    lr: float = 0.1  # Adam learning rate on the logits z
    retain_weight: float = 1.0  # weight of the retain distillation to the base
    max_rows: int = 128  # validation rows per set used to fit (fixed seeded subsets); see configs/merge yaml
    fit_on: str = "val"  # the rows the coefficients are fitted on: "val" (the judged rows) | "train" (module doc)
    check_every: int = 10  # measure the policies' acceptance every this many steps (and at 0 and the end)
    patience: int = 2  # stop once a checked state meets every criterion and `patience` further checks kept none
    # better (0: run every step); the kept state is the best checked one either way


def coefficients(z: torch.Tensor, c_max: float) -> torch.Tensor:
    """λ = c_max · sigmoid(z): always inside [0, c_max]."""
    return c_max * torch.sigmoid(z)


def group_of(key: str, granularity: str) -> str:
    """The coefficient group of a state-dict key: its module (layer), itself (tensor), or one group (run)."""
    if granularity == "run":
        return "all"
    return key if granularity == "tensor" else key.rsplit(".", 1)[0]


def sign_agreement(taus: list[torch.Tensor]) -> torch.Tensor:
    """Bool mask: no two runs change the entry in opposite directions (zeros agree with anything)."""
    pos = torch.stack([t > 0 for t in taus]).any(0)
    neg = torch.stack([t < 0 for t in taus]).any(0)
    return ~(pos & neg)


def _policy_loss(logits: torch.Tensor, kind: str, labels: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), 1)
    if kind == "run":
        assert target is not None  # the run's own log-probabilities
        return F.kl_div(logp, target, reduction="batchmean", log_target=True)
    if kind == "class":  # push the removed class's probability to 0
        p_y = logp.gather(1, labels[:, None]).exp().squeeze(1)
        return -torch.log1p(-p_y.clamp(max=1 - 1e-6)).mean()
    return -logp.mean(1).mean()  # CE to uniform


@dataclasses.dataclass
class Checked:
    """One checked state of the fit: its rank key (total violation, then −retain: smaller is better)."""

    step: int
    key: tuple[float, float]
    met: bool
    retain_acc: float
    lam: torch.Tensor
    state: StateDict


@dataclasses.dataclass
class Fit:
    """The fit's own check / keep-best / patience (not the unlearning controller's: module doc).

    `plan.update(t)` runs step t; `judge(step)` checks the state at 0, every `every` steps and at the budget.
    The best is the checked state with the smallest key, met or not; once it meets every criterion, the fit
    stops after `patience` further checks that kept none better (0: run every step)."""

    plan: Plan
    every: int
    patience: int
    checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    steps_run: int = 0
    best: Checked | None = None
    since: int = 0  # checks since the best last changed

    def keep(self, c: Checked) -> bool:
        """Record and rank one checked state; True when the fit should stop."""
        self.checks.append({"step": c.step, "met": c.met, "violation": round(c.key[0], 3), "retain_acc": c.retain_acc})
        if self.best is None or c.key < self.best.key:
            self.best, self.since = c, 0
        else:
            self.since += 1
        # "met", not violation 0: a vacuous equivalence policy has no failed check and is still not met
        return self.patience > 0 and self.best.met and self.since >= self.patience

    def run(self, judge: Callable[[int], Checked]) -> Checked:
        self.keep(judge(0))
        budget = self.plan.budget
        for step in range(1, budget + 1):
            self.steps_run = step
            self.plan.update(step)
            if (step % self.every == 0 or step == budget) and self.keep(judge(step)):
                break
        assert self.best is not None
        return self.best


@MERGES.register("learned_coefficients")
class LearnedCoefficients(MergeMethod):
    name = "learned_coefficients"
    summary = "AdaMerging-style bounded per-layer coefficients fitted on validation rows to every policy's criteria"
    Config = LearnedCoefficientsConfig

    def validate(self) -> None:
        c = self.config
        check_choice("granularity", c.granularity, GRANULARITIES)
        check_choice("fit_on", c.fit_on, FIT_ROWS)
        check_range("c_max", float(c.c_max), 0.0, 10.0, lo_open=True)
        check_range("init", float(c.init), 0.0, float(c.c_max))
        if not 0 < float(c.init) < float(c.c_max):
            raise ConfigError(f"Expected init strictly inside (0, c_max={c.c_max}), but got {c.init}.")
        check_range("lr", float(c.lr), 0.0, 100.0, lo_open=True)
        check_range("retain_weight", float(c.retain_weight), 0.0, 1000.0)
        if int(c.steps) < 0 or int(c.max_rows) < 8 or int(c.check_every) < 1 or int(c.patience) < 0:
            raise ConfigError(f"Expected steps >= 0, max_rows >= 8, check_every >= 1 and patience >= 0, but got "
                              f"{c.steps}, {c.max_rows}, {c.check_every} and {c.patience}.")

    def _merge_floats(self, base: StateDict, runs: list[StateDict], weights: list[float], env: MergeEnv) -> StateDict:
        cfg, dev = self.config, env.ctx.device
        if not env.policies or len(env.policies) != len(runs) or env.data is None:
            raise ConfigError("Expected one policy per run with validation data for learned_coefficients "
                              f"(pass --cohort), but got {len(env.policies)} policies for {len(runs)} runs.")
        env.require("build_model", self.name)
        build, data = env.build_model, env.data
        assert build is not None  # required above
        taus = deltas(base, runs)
        groups = sorted({group_of(k, cfg.granularity) for k in base})
        gidx = {k: groups.index(group_of(k, cfg.granularity)) for k in base}
        parts = 2 if cfg.sign_split else 1
        agree = {k: sign_agreement([t[k] for t in taus]) for k in base}
        pieces = [{k: ((t[k] * agree[k]).float().to(dev), (t[k] * ~agree[k]).float().to(dev)) for k in base}
                  for t in taus]
        z0 = math.log(cfg.init / (cfg.c_max - cfg.init))
        z = torch.full((len(runs), len(groups), parts), z0, device=dev, requires_grad=True)
        buffers = merge_buffers(env.base_sd, env.run_sds, weights, cfg.bn_stats)
        model = build({**{k: v for k, v in env.base_sd.items()}}).to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        bufs = {k: v.to(dev) for k, v in buffers.items()}
        base_dev = {k: v.float().to(dev) for k, v in base.items()}

        def params(lam: torch.Tensor) -> dict[str, torch.Tensor]:
            out = {}
            for k, b in base_dev.items():
                acc = b
                for i, piece in enumerate(pieces):
                    a, c = piece[k]
                    coef = lam[i, gidx[k]]
                    acc = acc + coef[0] * a + coef[-1] * c if parts == 2 else acc + coef[0] * (a + c)
                out[k] = acc
            return out

        base_model = build(env.base_sd).to(dev).eval()
        terms = self._terms(env, base_model)
        judge_merged = policies.PolicyJudge(base_model, env.policies, data, dev)  # the base read once, not per check
        # every term's rows in one forward of θ(λ) (eval mode: BatchNorm reads its fixed buffers, so a row's
        # output does not depend on its batch), and θ(λ) built once per step, not once per term
        x_all = torch.cat([x for _, x, _ in terms])
        sizes = [len(x) for _, x, _ in terms]
        opt = torch.optim.Adam([z], lr=float(cfg.lr))

        def update(t: int) -> float:  # one Adam step on the coefficients' logits z
            lam = coefficients(z, cfg.c_max)
            logits = functional_call(model, {**params(lam), **bufs}, (x_all,)).split(sizes)
            loss = sum(w * fn(out) for (w, _, fn), out in zip(terms, logits))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        def judge(step: int) -> Checked:
            with torch.no_grad():
                lam = coefficients(z, cfg.c_max)
                state = {k: v.detach().cpu().double() for k, v in params(lam).items()}
            merged = build({**state, **buffers}).to(dev)
            acc = judge_merged(merged)
            return Checked(step, (policies.violation_total(acc), -acc["retain"]["value"]), bool(acc["met"]),
                           acc["retain"]["value"], lam.detach().cpu().clone(), state)

        fit = Fit(Plan(update, int(cfg.steps)), int(cfg.check_every), int(cfg.patience))
        best = fit.run(judge)
        env.ctx.log[self.name] = {"groups": groups, "parts": ["agree", "conflict"][:parts], "checks": fit.checks,
                                  "steps_run": fit.steps_run, "chosen_step": best.step,
                                  "coefficients": best.lam.tolist(), "c_max": float(cfg.c_max)}
        return best.state

    def _terms(self, env: MergeEnv, base_model: nn.Module) -> list[tuple[float, torch.Tensor, Any]]:
        """(weight, rows, loss(logits on those rows)) per policy and the retain distillation; targets computed
        once."""
        cfg, dev, seed = self.config, env.ctx.device, int(env.ctx.seed)
        build, data = env.build_model, env.data
        assert build is not None and data is not None  # _merge_floats checked both
        n = int(cfg.max_rows)
        terms: list[tuple[float, torch.Tensor, Any]] = []

        for i, p in enumerate(env.policies):
            held = p.data.val_forget if cfg.fit_on == "val" and len(p.data.val_forget) else p.data.train_forget
            rows = subsample(held, n, seed + 11 * i)
            x, y = rows.images.to(dev), rows.labels.to(dev)
            removed = set(removed_classes(p.data))
            kind = ("run" if p.goal == "equivalence" else
                    "class" if removed and set(rows.labels.tolist()) <= removed else "domain")
            target = None
            if kind == "run":
                with torch.no_grad():
                    run = build(env.run_sds[i]).to(dev).eval()
                    target = F.log_softmax(run(x).float(), 1)
            terms.append((1.0, x, lambda out, y=y, kind=kind, target=target: _policy_loss(out, kind, y, target)))
        retain = subsample(data.val_retain if cfg.fit_on == "val" else data.train_retain, n, seed + 1)
        if float(cfg.retain_weight) > 0 and len(retain):
            xr = retain.images.to(dev)
            with torch.no_grad():
                teacher = F.log_softmax(base_model(xr).float(), 1)
            terms.append((float(cfg.retain_weight), xr, lambda out: F.kl_div(
                F.log_softmax(out.float(), 1), teacher, reduction="batchmean", log_target=True)))
        return terms
