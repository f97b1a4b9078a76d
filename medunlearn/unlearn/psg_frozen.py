"""PSG, frozen-inner variant: the authors' code's approximation of the bilevel problem.

The inner search and the relabel run on the frozen original θ0 (not on the model being unlearned), with one
FGSM-style step by default, so every forget image's target is fixed by θ0 up to the fresh noise of each step.
Cheaper than `psg` (the inner passes need no graph through θ's changing weights and one step suffices), and
with γ = λ = φ = 0, hard targets and one inner step it is exactly Boundary Shrink (`boundary_shrink.py`).
Every knob is PSG's (see psg.py); only the defaults below differ. Where they came from: docs/results/psg-ab.md.
"""
from __future__ import annotations

import dataclasses

from medunlearn.unlearn.base import METHODS, Unlearner
from medunlearn.unlearn.psg import PSG, PSGConfig, psg_plan
from medunlearn.unlearn.types import Plan


@dataclasses.dataclass
class PSGFrozenConfig(PSGConfig):
    """PSG hyperparameters with the authors' inner problem: θ0, one sign step (λ has no effect then)."""

    inner_steps: int = 1  # 1 = one FGSM-style step on θ0 (authors' code)
    # PSG's defaults before the A/B in docs/results/psg-ab.md, kept for this variant
    epochs: float = 20.0
    lr: float = 5e-5
    target: str = "hard"
    nearest_wrong: bool = True
    freeze_bn: bool = True


@METHODS.register("psg_frozen")
class PSGFrozen(Unlearner):
    name = "psg_frozen"
    summary = "PSG with the inner search and relabel on the frozen original (authors' code; one FGSM step)"
    Config = PSGFrozenConfig
    search_space = PSG.search_space  # the same knobs as PSG; only where the inner search runs differs

    def plan(self, model, original, data, ctx, goal) -> Plan:
        return psg_plan(model, original, data, ctx, self.config, self.name, inner_at="original")
