"""Boundary Shrink (Chen et al., "Boundary Unlearning", CVPR 2023).

For each forget image, one FGSM step of size ε on the frozen original model finds the nearest wrong
class (x' = clip(x + ε·sign ∇_x CE(f0(x), y)), target = argmax_{k≠y} f0(x')); the model is then
fine-tuned on the clean forget images toward those targets. This is PSG with γ = λ = φ = 0, one inner
step and hard targets, and it runs through the same loop (`psg.psg_plan`), so the two agree bit for bit.
ε is in [0, 1] pixel units; lr 1e-4 with a stop rule instead of the authors' 1e-5 for 10 epochs.
"""
from __future__ import annotations

import dataclasses

from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner
from medunlearn.unlearn.psg import PSGConfig, psg_plan
from medunlearn.unlearn.space import Choice, Float
from medunlearn.unlearn.types import ControlConfig, Plan


@dataclasses.dataclass
class BoundaryShrinkConfig(BaseConfig, ControlConfig):
    """Boundary Shrink hyperparameters."""

    epochs: float = 20.0  # budget in passes over D_f; the goal's stop rule usually ends earlier
    batch_size: int = 32
    lr: float = 1e-4  # SGD learning rate
    momentum: float = 0.9
    weight_decay: float = 0.0
    epsilon: float = 0.1  # FGSM step in [0, 1] pixel units
    nearest_wrong: bool = True  # exclude y when picking the new target
    quantise: bool = True  # round x' to multiples of 1/255
    freeze_bn: bool = True  # keep BatchNorm statistics (and dropout) in eval mode


def as_psg_config(cfg: BoundaryShrinkConfig) -> PSGConfig:
    """The PSG config that is exactly Boundary Shrink: γ = λ = φ = 0, one inner step, hard targets."""
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return PSGConfig(**shared, gamma=0.0, lam=0.0, phi=0.0, inner_steps=1, step_size=1.0, target="hard")


@METHODS.register("boundary_shrink")
class BoundaryShrink(Unlearner):
    name = "boundary_shrink"
    summary = "Boundary Shrink: relabel forget rows to the FGSM nearest wrong class of the original, fine-tune"
    Config = BoundaryShrinkConfig
    search_space = {"lr": Float(1e-5, 1e-3, log=True), "epsilon": Float(0.02, 0.3),
                    "batch_size": Choice(16, 32, 64)}  # what `medunlearn tune` varies

    def plan(self, model, original, data, ctx, goal) -> Plan:
        return psg_plan(model, original, data, ctx, as_psg_config(self.config), self.name, inner_at="original")
