"""The merge-method protocol and the state-dict helpers every method shares.

Every unlearning run starts from the same deployed base θ0, so methods work on deltas τ_i = θ_i − θ0.
State-dict entries fall into four groups, handled the same way by every method:

- learned float tensors (weights, biases, constant float buffers): merged by the method;
- BatchNorm ``running_mean`` / ``running_var``: weighted average of the runs (``bn_stats="average"``),
  the base's values (``"base"``), or recomputed on retain data after merging (``"recompute"``);
- ``num_batches_tracked``: never averaged; the maximum over base and runs;
- any other integer tensor: copied from the base.

Add a method in three places: ``merge/<name>.py`` (a subclass registered with ``@MERGES.register``),
one import in ``merge/__init__.py``, and ``configs/merge/<name>.yaml``.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from medunlearn.bounds import check_config_bounds
from medunlearn.data.imageset import SplitData
from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.registry import Registry, did_you_mean
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import apply_overrides

StateDict = dict[str, torch.Tensor]
ModelBuilder = Callable[[Mapping[str, torch.Tensor]], nn.Module]  # state dict -> model (eval mode)
ScoreFn = Callable[[nn.Module], float]  # higher is better

MERGES: Registry[type[MergeMethod]] = Registry("merge method")
BN_STATS = ("average", "base", "recompute")
_BN_SUFFIXES = ("running_mean", "running_var")
_COUNTER = "num_batches_tracked"


@dataclasses.dataclass
class MergeConfig:
    """Fields every merge method has."""

    bn_stats: str = "average"  # BatchNorm running stats: "average" (weighted), "base", or "recompute" on retain
    bn_batch_size: int = 64  # batch size used when bn_stats="recompute"


@dataclasses.dataclass
class MergeEnv:
    """What a method may need besides tensors: run context, retain data, a model builder, a score."""

    ctx: RunContext
    data: SplitData | None = None
    build_model: ModelBuilder | None = None
    score_fn: ScoreFn | None = None
    run_params: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per-run extras (density)
    base_sd: Mapping[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # full state dicts,
    run_sds: Sequence[Mapping[str, torch.Tensor]] = ()  # buffers included (greedy soup scores whole models)
    policies: Sequence[Any] = ()  # merge.policies.Policy per run (goal, criteria, validation data), when known
    # what other merge methods already produced from these very runs: {method: (its config as a dict, state)};
    # merge_repair reuses its first merge's state from here instead of fitting it again (the merge search)
    done: Mapping[str, tuple[dict[str, Any], Mapping[str, torch.Tensor]]] = dataclasses.field(default_factory=dict)

    def require(self, what: str, method: str) -> None:
        if getattr(self, what) is None:
            raise ConfigError(f"Expected {what!r} for merge method {method!r} (it needs retain data and a model "
                              f"builder), but got none; pass data= to merge_runs.")

    def need_data(self, method: str) -> SplitData:
        """`data`, or the ConfigError `require` raises."""
        self.require("data", method)
        assert self.data is not None
        return self.data

    def need_builder(self, method: str) -> ModelBuilder:
        """`build_model`, or the ConfigError `require` raises."""
        self.require("build_model", method)
        assert self.build_model is not None
        return self.build_model


class MergeMethod(abc.ABC):
    """Base class: ``merge(base_sd, run_sds, weights, ...)`` returns a NEW state dict; inputs are not modified."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Config: ClassVar[type] = MergeConfig
    uses_weights: bool = True  # False: the method picks its own mixing (greedy soup, splice)
    allow_negative_weights: ClassVar[bool] = False
    run_param_names: tuple[str, ...] = ("weight",)  # accepted under models[i].parameters
    min_runs: ClassVar[int] = 1

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        cfg = config if config is not None else self.Config()
        if overrides:
            cfg = apply_overrides(cfg, overrides)
        self.config = cfg
        check_choice("bn_stats", cfg.bn_stats, BN_STATS)
        check_config_bounds(cfg, self.name or type(self).__name__, caps=False)  # declared ranges (bounds.bounded)
        self.validate()

    def validate(self) -> None:  # noqa: B027 - an optional hook: a method without cross-field rules keeps it
        """Check what field ranges cannot say (choices, one field against another); raise ConfigError."""

    def merge(self, base_sd: Mapping[str, torch.Tensor], run_sds: Sequence[Mapping[str, torch.Tensor]],
              weights: Sequence[float] | None = None, ctx: RunContext | None = None, data: SplitData | None = None,
              build_model: ModelBuilder | None = None, score_fn: ScoreFn | None = None,
              run_params: list[dict[str, Any]] | None = None, policies: Sequence[Any] = (),
              done: Mapping[str, tuple[dict[str, Any], Mapping[str, torch.Tensor]]] | None = None) -> StateDict:
        """Merge runs that share base θ0. Every tensor keeps its key, shape and dtype.

        `policies` (merge.policies.Policy, one per run) is what criteria-aware methods fit or repair on; `done`:
        merges of the same runs already made (MergeEnv.done)."""
        if len(run_sds) < self.min_runs:
            raise ConfigError(f"Expected at least {self.min_runs} runs for merge method {self.name!r}, "
                              f"but got {len(run_sds)}.")
        check_same_keys(base_sd, run_sds)
        if not self.uses_weights and weights is not None and len(set(float(w) for w in weights)) > 1:
            raise ConfigError(f"Expected no per-run weights for {self.name!r} (it chooses its own mixing), "
                              f"but got {list(weights)}.")
        w = check_weights(weights, len(run_sds), self.allow_negative_weights)
        env = MergeEnv(ctx or RunContext(), data, build_model, score_fn, run_params or [{} for _ in run_sds],
                       base_sd, run_sds, list(policies), dict(done or {}))
        float_keys = [k for k, t in base_sd.items() if t.is_floating_point() and not is_bn_stat(k)]
        merged = self._merge_floats({k: base_sd[k] for k in float_keys},
                                    [{k: sd[k] for k in float_keys} for sd in run_sds], w, env)
        out = {k: merged[k].to(base_sd[k].dtype).clone() for k in float_keys}
        out.update(self._merge_buffers(base_sd, run_sds, w, env))
        if self.config.bn_stats == "recompute" and any(is_bn_stat(k) for k in base_sd):
            data, build = env.need_data(self.name), env.need_builder(self.name)
            out = recompute_bn_stats(build(out), data, self.config.bn_batch_size, env.ctx)
        out = self._finish(out, env)
        return {k: out[k].to(base_sd[k].dtype).contiguous() for k in base_sd}

    @abc.abstractmethod
    def _merge_floats(self, base: StateDict, runs: list[StateDict], weights: list[float], env: MergeEnv) -> StateDict:
        """Merge the learned float tensors (BN stats excluded)."""

    def _merge_buffers(self, base: Mapping[str, torch.Tensor], runs: Sequence[Mapping[str, torch.Tensor]],
                       weights: list[float], env: MergeEnv) -> StateDict:
        return merge_buffers(base, runs, weights, self.config.bn_stats)

    def _finish(self, state: StateDict, env: MergeEnv) -> StateDict:
        """Hook after buffers are in place (splice repair)."""
        return state


def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"Expected {key} in {list(choices)}, but got {value!r}."
                          f"{did_you_mean(str(value), list(choices))}")


def check_range(key: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    bad = not math.isfinite(value) or value > hi or (value <= lo if lo_open else value < lo)
    if bad:
        raise ConfigError(f"Expected {key} in {'(' if lo_open else '['}{lo}, {hi}], but got {value!r}.")


def is_bn_stat(key: str) -> bool:
    return key.endswith(_BN_SUFFIXES)


def check_same_keys(base: Mapping[str, torch.Tensor], runs: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Every run must have exactly the base's keys, shapes and dtypes."""
    for i, sd in enumerate(runs):
        missing, extra = sorted(set(base) - set(sd)), sorted(set(sd) - set(base))
        if missing or extra:
            raise CheckpointError(f"Expected run {i} to have the base's {len(base)} tensors, but got "
                                  f"{len(missing)} missing (e.g. {missing[:3]}) and "
                                  f"{len(extra)} extra (e.g. {extra[:3]}).")
        for k, t in base.items():
            if sd[k].shape != t.shape or sd[k].dtype != t.dtype:
                raise CheckpointError(f"Expected run {i} tensor {k!r} as {tuple(t.shape)} {t.dtype}, but got "
                                      f"{tuple(sd[k].shape)} {sd[k].dtype}.")


def check_weights(weights: Sequence[float] | None, n: int, allow_negative: bool = False) -> list[float]:
    """Per-run weights (uniform 1.0 when None); finite, and non-negative with a positive sum unless allowed."""
    if weights is None:
        return [1.0] * n
    w = list(weights)
    if len(w) != n:
        raise ConfigError(f"Expected one weight per run ({n}), but got {len(w)}.")
    try:
        w = [float(x) for x in w]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Expected numeric weights, but got {list(weights)}.") from exc
    if not all(math.isfinite(x) for x in w):
        raise ConfigError(f"Expected finite weights, but got {w}.")
    if not allow_negative and (min(w) < 0 or sum(w) <= 0):
        raise ConfigError(f"Expected non-negative weights with a positive sum, but got {w}.")
    return w


def deltas(base: Mapping[str, torch.Tensor], runs: Sequence[Mapping[str, torch.Tensor]]) -> list[StateDict]:
    """τ_i = θ_i − θ0 in float64 (exact enough to make merge([x, x]) reproduce x)."""
    return [{k: sd[k].double() - base[k].double() for k in base} for sd in runs]


def weighted_average(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ w_i t_i / Σ w_i in float64; tensors share one shape."""
    total = float(sum(weights))
    acc = torch.zeros_like(tensors[0], dtype=torch.float64)
    for t, w in zip(tensors, weights):
        acc += float(w) * t.double()
    return acc / total


def merge_buffers(base: Mapping[str, torch.Tensor], runs: Sequence[Mapping[str, torch.Tensor]],
                  weights: Sequence[float], bn_stats: str = "average") -> StateDict:
    """BN running stats (weighted mean or base's), num_batches_tracked (max), other integer tensors (base)."""
    w = [abs(x) for x in weights] if sum(abs(x) for x in weights) > 0 else [1.0] * len(runs)
    out: StateDict = {}
    for k, t in base.items():
        if is_bn_stat(k):
            out[k] = t.clone() if bn_stats == "base" else weighted_average([sd[k] for sd in runs], w).to(t.dtype)
        elif k.endswith(_COUNTER):
            out[k] = torch.stack([t] + [sd[k] for sd in runs]).max(dim=0).values.clone()
        elif not t.is_floating_point():
            out[k] = t.clone()
    return out


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, data: SplitData, batch_size: int, ctx: RunContext) -> StateDict:
    """Reset BatchNorm running stats and re-estimate them (cumulative average) on the retain train set."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # None = exact cumulative average over the batches seen
    model.to(ctx.device).train()
    for batch in data.train_retain.loader(batch_size, shuffle=False):
        model(batch["image"].to(ctx.device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def head_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of the classifier head (`Classifier.head`, an nn.Linear)."""
    return [k for k in state if k.startswith("head.")]
