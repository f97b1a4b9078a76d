"""The types every unlearning method and the controller share: the controller's settings (`ControlConfig`),
what a method hands the controller (`Plan`) and what a run returns (`Outcome`).

This module imports only torch and `unlearn/criteria.py`, so any piece of the unlearning core may import it."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medunlearn.errors import ConfigError
from medunlearn.unlearn.criteria import CriteriaConfig


@dataclasses.dataclass
class ControlConfig(CriteriaConfig):
    """Controller fields shared by every method's Config."""

    check_every: int = 0  # check every this many steps; 0 = auto (every step, thinned to keep checks < 1/3)
    max_eval: int = 512  # rows per fixed probe (val_forget, val_retain; train_forget: see membership_rows)
    # equivalence: rows of each membership probe (train_forget members, held-out forget rows). 512 cannot resolve a
    # model's train/held-out gap: on Fashion-MNIST random 10 % the original's accuracy-gap CI was [-0.0, 6.9] (covers
    # 0: vacuous); with 2048 it is [1.6, 6.8] (fails) while the retrain's [-2.9, 2.3] passes
    # (docs/results/fm-random-equivalence.md)
    membership_rows: int = 2048
    patience: int = 3  # checks to go on after the first met state (see polish) or while overshooting
    # False: stop `patience` checks after the first state that meets every criterion (stop when done, issue 31);
    # True: go on while the best state improves (`patience` checks after the last improvement, the earlier rule)
    polish: bool = False
    repair: bool = True  # run retain repair when val_retain falls below its guard
    repair_steps: int = 20  # most repair steps per guard breach
    repair_lr: float = 1e-4  # Adam learning rate of the repair steps (gradient norm clipped at 5)
    repair_batch_size: int = 64
    # repair also distils train_forget rows toward the model as it entered repair (KL, this weight), so restoring
    # retain does not undo the forgetting already done; 0 = retain-only repair (docs/results/repair-hold.md)
    repair_hold: float = 0.0
    backtracks: int = 4  # overshoot: return to the last good state and scale the lr, at most this many times
    backtrack_factor: float = 0.5  # lr multiplier per backtrack


@dataclasses.dataclass
class Plan:
    """What a method hands the controller. `update(t)` performs optimiser step t (1-based), returns its loss."""

    update: Callable[[int], float]
    budget: int
    warmup: int = 0  # no state before this step may be accepted (EU-k's fresh blocks start at chance)
    rows_per_step: int = 0  # forward-equivalent rows one step processes (auto check interval); 0 = unknown
    finalize: Callable[[nn.Module], nn.Module] | None = None  # applied to the returned state (e.g. prune a head)
    params: list[nn.Parameter] | None = None  # what retain repair may update (the method's subset); None = all
    optimizer: torch.optim.Optimizer | None = None  # the method's optimiser: lets the controller backtrack


@dataclasses.dataclass
class Outcome:
    model: nn.Module
    acceptance: dict[str, Any]
    trace: list[dict[str, Any]]


def validate_control(cfg: ControlConfig) -> None:
    if cfg.check_every < 0 or cfg.max_eval < 8 or cfg.membership_rows < 8 or cfg.patience < 0 or cfg.repair_steps < 0:
        raise ConfigError(f"Expected check_every >= 0, max_eval >= 8, membership_rows >= 8, patience >= 0, "
                          f"repair_steps >= 0, but got {cfg.check_every}, {cfg.max_eval}, {cfg.membership_rows}, "
                          f"{cfg.patience}, {cfg.repair_steps}.")
    if cfg.backtracks < 0 or not 0 < cfg.backtrack_factor < 1:
        raise ConfigError(f"Expected backtracks >= 0 and backtrack_factor in (0, 1), but got {cfg.backtracks}, "
                          f"{cfg.backtrack_factor}.")
    if not cfg.repair_lr > 0 or cfg.repair_batch_size < 1 or not 0 <= cfg.repair_hold <= 100:
        raise ConfigError(f"Expected repair_lr > 0, repair_batch_size >= 1 and 0 <= repair_hold <= 100, but got "
                          f"{cfg.repair_lr}, {cfg.repair_batch_size}, {cfg.repair_hold}.")
