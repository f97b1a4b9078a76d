"""The unlearner protocol and the helpers every method shares (config overrides, goal check, release).

Add a method in three places: `unlearn/<name>.py` (a subclass registered with `@METHODS.register`),
one import in `unlearn/__init__.py`, and `configs/unlearn/<name>.yaml`. Contract tests pick it up.
"""
from __future__ import annotations

import abc
import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from medunlearn.bounds import check_config_bounds
from medunlearn.data.imageset import SplitData
from medunlearn.errors import ConfigError, DataError
from medunlearn.models import finite
from medunlearn.models.finite import check_finite_loss as check_finite_loss  # re-exported (home: models/)
from medunlearn.models.finite import check_finite_model as check_finite_model
from medunlearn.models.modes import freeze_batchnorm as freeze_batchnorm
from medunlearn.registry import Registry, did_you_mean
from medunlearn.runtime import RunContext
from medunlearn.unlearn.controller import ExtraChecks, Observer, run_controlled
from medunlearn.unlearn.cost import counting
from medunlearn.unlearn.types import Outcome

METHODS: Registry[type[Unlearner]] = Registry("unlearning method")
GOALS = ("suppression", "equivalence")


@dataclasses.dataclass
class BaseConfig:
    """Fields every method has."""

    epochs: float = 1.0  # passes over the forget set (or retain set, for retain-only methods)
    batch_size: int = 64
    lr: float = 1e-3


class Unlearner(abc.ABC):
    """Base class. A method supplies `plan(...)` (its update step and budget); the controller
    (`unlearn.controller.Controller`) owns checks, retain repair, rollback, the trace and the verdict.

    `run(model, data, ctx, goal)` returns an Outcome (new model + acceptance + trace); `unlearn(...)` returns
    just the model. The input model is never modified.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Config: ClassVar[type] = BaseConfig
    # What `medunlearn tune` may vary: {Config field: space.Float | space.Int | space.Choice}; {} = not tunable.
    search_space: ClassVar[dict[str, Any]] = {}
    # checks every checked state must also pass (set by `forget --audit`: the membership audit); None = none
    extra_checks: Any = None

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        cfg = config if config is not None else self.Config()
        if overrides:
            cfg = apply_overrides(cfg, overrides)
        check_config_bounds(cfg, self.name or type(self).__name__, caps=False)  # declared ranges (bounds.bounded)
        self.config = cfg

    def run(self, model: nn.Module, data: SplitData, ctx: RunContext, goal: str = "suppression",
            observers: Sequence[Observer] = ()) -> Outcome:
        """Plan and run under the controller; `observers` hook into the run (controller.Observer)."""
        check_goal(goal)
        if len(data.train_forget) == 0:
            raise DataError("Expected at least one forget image, but got an empty forget set.")
        new = copy.deepcopy(model).to(ctx.device)
        original = copy.deepcopy(model).to(ctx.device).eval()  # the caller's model is never touched
        ctx.seed_everything()
        with counting(phase="setup") as counter:  # image passes per phase: acceptance["cost"] (unlearn/cost.py)
            plan = self.plan(new, original, data, ctx, goal)
            if self.extra_checks is not None:
                observers = (*observers, ExtraChecks(self.extra_checks))
            outcome = run_controlled(new, original, data, ctx, goal, self.config, plan, self.name, observers,
                                     counter=counter)
            outcome.model = release(outcome.model)
            with counter.phase("checks"):  # weights first, then logits (models/finite.check_finite_outputs)
                check_finite_outputs(outcome.model, data, ctx)
        outcome.acceptance = dataclasses.replace(outcome.acceptance, cost=counter.record())
        return outcome

    def unlearn(self, model: nn.Module, data: SplitData, ctx: RunContext, goal: str = "suppression") -> nn.Module:
        return self.run(model, data, ctx, goal).model

    @abc.abstractmethod
    def plan(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str):
        """Prepare `model` (a private copy of `original`) and return a types.Plan that updates it in place."""


def release(model: nn.Module) -> nn.Module:
    """Restore requires_grad on every parameter and switch to eval mode (the state a caller expects back)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def check_goal(goal: str) -> None:
    if goal not in GOALS:
        raise ConfigError(f"Expected goal in {list(GOALS)}, but got {goal!r}.{did_you_mean(goal, list(GOALS))}")


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of dataclass `cfg` with `overrides`, coercing strings to each field's type."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise ConfigError(
                f"Expected a {type(cfg).__qualname__} field in {sorted(fields)}, but got {key!r}."
                f"{did_you_mean(key, sorted(fields))}"
            )
        default = getattr(cfg, key)
        optional = "Optional" in str(fields[key].type) or "None" in str(fields[key].type)
        if optional and (raw is None or str(raw).lower() in ("none", "null", "")):
            values[key] = None
        elif default is None and "float" in str(fields[key].type):  # Optional[float] set to a number
            values[key] = coerce(raw, 0.0, key)
        else:
            values[key] = coerce(raw, default, key)
    return dataclasses.replace(cfg, **values)


def coerce(raw: Any, default: Any, key: str) -> Any:
    """Coerce a config value (YAML or --set string) to the type of the field's default."""
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"Expected true/false for {key}, but got {raw!r}.")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            val = float(raw) if isinstance(default, float) else int(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Expected a number for {key}, but got {raw!r}.") from exc
        if isinstance(val, float) and not math.isfinite(val):
            raise ConfigError(f"Expected a finite number for {key}, but got {raw!r}.")
        return val
    if default is None or isinstance(default, str):
        return None if raw is None else str(raw)
    if isinstance(default, (tuple, list)):
        if isinstance(raw, str):
            raw = [r.strip() for r in raw.split(",") if r.strip()]
        return type(default)(raw)
    return raw


UNLEARN_HINT = "lower the learning rate"


def check_finite_outputs(model: nn.Module, data: SplitData, ctx: RunContext, rows: int = 64) -> None:
    """models/finite.check_finite_outputs on the first `rows` forget and retain rows (finite weights can still
    overflow to inf/NaN logits, e.g. after gradient ascent)."""
    images = [part.take(torch.arange(min(rows, len(part)))) for part in (data.train_forget, data.train_retain)
              if len(part)]
    if images:
        finite.check_finite_outputs(model, "the unlearned model", torch.cat(images), hint=UNLEARN_HINT)
