"""Retain repair, the controller's response when val_retain falls below its guard (unlearn/controller.py)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from medunlearn.data.imageset import SplitData
from medunlearn.models.modes import frozen_teacher, training_frozen_bn
from medunlearn.runtime import RunContext
from medunlearn.unlearn.streams import batches
from medunlearn.unlearn.types import ControlConfig


class Repairer:
    """Retain repair: CE on train_retain + KL(original‖model), removed classes masked in the teacher; with
    `repair_hold` > 0 also hold · KL(entry‖model) on train_forget, `entry` being the model as it entered repair.

    The KL term distils the frozen original's full softmax at temperature T = 1 (no rescaling), so repair restores
    the retain rows' confidence, not only their argmax: criterion (d) (mean max-softmax on val_retain) triggers a
    repair episode as (c) does, and the episode ends when both hold (controller.py). T = 1 because (d) compares
    the model's own T = 1 confidence with the original's; a softer teacher (T > 1) would teach a flatter output
    than the one (d) asks for."""

    def __init__(self, model: nn.Module, original: nn.Module, data: SplitData, cfg: ControlConfig,
                 ctx: RunContext, removed: list[int], params: list[nn.Parameter] | None = None) -> None:
        self.model, self.k, self.cfg, self.removed = model, data.num_classes, cfg, removed
        self.teacher = frozen_teacher(original, ctx.device)
        self.stream = batches(data.train_retain, cfg.repair_batch_size, ctx.rank_seed + 7, ctx.device)
        self.params = list(params) if params is not None else list(model.parameters())
        self.opt: torch.optim.Optimizer | None = None
        self.hold = cfg.repair_hold if len(data.train_forget) else 0.0
        self.forget_stream = batches(data.train_forget, cfg.repair_batch_size, ctx.rank_seed + 8, ctx.device) \
            if self.hold > 0 else None
        self.entry: nn.Module | None = None

    def begin(self) -> None:
        """A repair episode starts: freeze the current model as the forget-side teacher (repair_hold > 0)."""
        if self.hold > 0:
            self.entry = frozen_teacher(self.model)

    def step(self) -> float:
        model = self.model
        grads = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in grads:
            p.requires_grad_(True)
        if self.opt is None:
            # Adam + clipping: SGD with momentum diverged on a model the method had just pushed far (BN frozen)
            self.opt = torch.optim.Adam(self.params, lr=self.cfg.repair_lr)
        try:
            with training_frozen_bn(model):  # retain-only batches must not move BatchNorm statistics either
                x, y = next(self.stream)
                out = model(x)[:, :self.k]
                with torch.no_grad():
                    t = self.teacher(x)[:, :self.k].float()
                    if self.removed:
                        t[:, self.removed] = float("-inf")
                # probabilities, not log-probabilities: a masked class has p = 0, and 0·log 0 must count as 0, not NaN
                loss = F.cross_entropy(out, y) + F.kl_div(F.log_softmax(out.float(), 1), F.softmax(t, 1),
                                                          reduction="batchmean")
                if self.entry is not None:
                    xf, _ = next(self.forget_stream)
                    with torch.no_grad():
                        held = F.softmax(self.entry(xf)[:, :self.k].float(), 1)
                    loss = loss + self.hold * F.kl_div(F.log_softmax(model(xf)[:, :self.k].float(), 1), held,
                                                       reduction="batchmean")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 5.0)
                self.opt.step()
        finally:
            for p, g in grads:
                p.requires_grad_(g)
        return float(loss.detach())
