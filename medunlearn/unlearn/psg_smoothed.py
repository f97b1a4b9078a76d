"""PSG, uniform-smoothed variant (ours, not in the paper): bilevel PSG whose forget targets are mixed with uniform.

Every outer step trains the forget images toward (1 − α)·t(x) + α/K, where t(x) is PSG's target from the inner
search at the current model (psg.py). Why: on a domain policy (device, site, outliers) faithful PSG reaches
criterion (a) but stays confidently wrong, because its target is a class across the nearest boundary; criterion
(b) asks for an uncertain model there. Mixing with uniform caps every target's top probability at
(1 − α) + α/K, and since PSG re-draws its targets from the model it is training, repeated steps flatten the
prediction on the forget domain instead of moving it to another confident class. α = 0 is exactly `psg`.
Every other knob and default is PSG's except φ = 0 (forget-only, as the authors' code: with PSG's φ = 5 the retain
distillation held the forget domain's confidence at 47-56 %). Where α = 0.8 and φ = 0 came from: the validation
A/B in docs/results/psg-ab.md ("Smoothed targets"). Measured: criterion (b) within reach on the demo cohort
(2/3 seeds met, at the edge), not on the seed-7 check cohort (overshoots (a) while still confident), so this is
not a replacement for FAMR on domain policies.
"""
from __future__ import annotations

import dataclasses

from medunlearn.errors import ConfigError
from medunlearn.unlearn.base import METHODS, Unlearner
from medunlearn.unlearn.controller import Plan
from medunlearn.unlearn.psg import PSG, PSGConfig, psg_plan
from medunlearn.unlearn.space import Choice, Float


@dataclasses.dataclass
class PSGSmoothedConfig(PSGConfig):
    """PSG hyperparameters plus α, the weight of uniform in every forget target."""

    smoothing: float = 0.8  # α in [0, 1]; 0 = psg
    phi: float = 0.0  # forget-only outer loss (the authors' φ); the controller's retain repair guards retain


@METHODS.register("psg_smoothed")
class PSGSmoothed(Unlearner):
    name = "psg_smoothed"
    summary = "PSG with forget targets mixed with uniform, so a forgotten domain ends uncertain (not in the paper)"
    Config = PSGSmoothedConfig
    search_space = {**PSG.search_space, "smoothing": Float(0.0, 0.9), "phi": Choice(0.0, 1.0, 5.0)}

    def plan(self, model, original, data, ctx, goal) -> Plan:
        if not 0.0 <= self.config.smoothing <= 1.0:
            raise ConfigError(f"Expected smoothing in [0, 1], but got {self.config.smoothing}.")
        return psg_plan(model, original, data, ctx, self.config, self.name, inner_at="current",
                        smoothing=self.config.smoothing)
