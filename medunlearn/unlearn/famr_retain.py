"""famr_retain: FAMR plus an output anchor on retain rows — an EXTENSION, not the paper's method.

J(θ) = L_f(θ) + (λ/2)‖θ_S − θ0_S‖² + φ_r · KL(f0(x_r) ‖ fθ(x_r)) on paired retain batches. Where a forget
domain shares the retain classes' features (a device or a site), an isotropic parameter anchor alone lets the
uniform objective rewrite shared features (docs/background.md: retain accuracy 18–80 %); the output anchor holds
the retain predictions directly. retain_weight = 0 is exactly `famr`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from medunlearn.models.modes import frozen_teacher
from medunlearn.unlearn.base import METHODS
from medunlearn.unlearn.famr import FAMR, FAMRConfig
from medunlearn.unlearn.space import Float
from medunlearn.unlearn.streams import cycle


@dataclasses.dataclass
class FAMRRetainConfig(FAMRConfig):
    retain_weight: float = 1.0  # φ_r, weight of KL(f0(x_r) ‖ fθ(x_r)) on a retain batch paired with each step


@METHODS.register("famr_retain")
class FAMRRetain(FAMR):
    name = "famr_retain"
    summary = "FAMR + a KL output anchor to the original on retain rows (extension, not the paper's method)"
    Config = FAMRRetainConfig
    search_space = {**FAMR.search_space, "retain_weight": Float(0.1, 10.0, log=True)}  # what `medunlearn tune` varies

    def retain_term(self, model: nn.Module, original: nn.Module, data, ctx) -> Callable[[], torch.Tensor] | None:
        w = self.config.retain_weight
        if w <= 0 or len(data.train_retain) == 0:
            return None
        teacher = frozen_teacher(original, ctx.device)
        stream = cycle(data.train_retain.loader(self.config.batch_size, shuffle=True, seed=ctx.rank_seed + 1))

        def term() -> torch.Tensor:
            xr = next(stream)["image"].to(ctx.device)
            with torch.no_grad():
                target = F.softmax(teacher(xr).float(), 1)
            return w * F.kl_div(F.log_softmax(model(xr).float(), 1), target, reduction="batchmean")

        return term
