"""Splice (PSG model composition): backbone of one run + classifier head of another, optional repair.

f(x) = W_F · h_R(x) + b_F, with h_R the feature extractor (and its BatchNorm buffers) of run ``backbone``
(good retention) and (W_F, b_F) the ``head.*`` tensors of run ``head`` (good forgetting). With
``repair_epochs > 0`` the spliced model is fine-tuned on the retain-train set with Adam (``lr`` 1e-4, the
PSG authors' setting; they used 5 epochs): ``repair="head"`` trains only the head with the backbone in
eval mode, ``repair="all"`` trains every parameter in train mode. Per-run weights are not used.
``bn_stats``: "average" keeps the backbone run's running stats, "base" the base's, "recompute" re-estimates.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from medunlearn.bounds import bounded
from medunlearn.errors import ConfigError
from medunlearn.merge.base import (
    MERGES,
    MergeConfig,
    MergeEnv,
    MergeMethod,
    StateDict,
    check_choice,
    head_keys,
    is_bn_stat,
)
from medunlearn.models.finite import check_finite_loss


@dataclasses.dataclass
class SpliceConfig(MergeConfig):
    backbone: int = 0  # index (in the models list) of the run giving the feature extractor
    head: int = 1  # index of the run giving the classifier head
    repair_epochs: int = bounded(0, 0)  # retain-set fine-tuning epochs after splicing (0 = none)
    repair: str = "head"  # "head" (head only, backbone frozen) or "all"
    lr: float = bounded(1e-4, 0, 1, open_lo=True)  # Adam learning rate of the repair
    batch_size: int = bounded(64, 1)  # repair batch size


def splice_states(backbone: Mapping[str, torch.Tensor], head: Mapping[str, torch.Tensor]) -> StateDict:
    """All tensors from `backbone` except the ``head.*`` ones, which come from `head`."""
    hk = set(head_keys(backbone))
    return {k: (head[k] if k in hk else backbone[k]).clone() for k in backbone}


@MERGES.register("splice")
class Splice(MergeMethod):
    name = "splice"
    summary = "PSG composition: feature extractor of one run + classifier head of another, optional repair"
    Config = SpliceConfig
    uses_weights = False
    min_runs = 2

    def validate(self) -> None:
        check_choice("repair", self.config.repair, ("head", "all"))

    def _indices(self, n: int) -> tuple[int, int]:
        b, h = int(self.config.backbone), int(self.config.head)
        for key, i in (("backbone", b), ("head", h)):
            if not 0 <= i < n:
                raise ConfigError(f"Expected splice {key} to index one of the {n} runs (0..{n - 1}), but got {i}.")
        return b, h

    def _merge_floats(self, base: StateDict, runs: list[StateDict], weights: list[float], env: MergeEnv) -> StateDict:
        if not head_keys(base):
            raise ConfigError("Expected a Classifier state dict with 'head.*' tensors for splice, but got none.")
        b, h = self._indices(len(runs))
        return splice_states(runs[b], runs[h])

    def _merge_buffers(self, base: Mapping[str, torch.Tensor], runs: Sequence[Mapping[str, torch.Tensor]],
                       weights: list[float], env: MergeEnv) -> StateDict:
        src = runs[self._indices(len(runs))[0]]
        return {k: (base[k] if self.config.bn_stats == "base" and is_bn_stat(k) else src[k]).clone()
                for k, t in base.items() if is_bn_stat(k) or not t.is_floating_point()}

    def _finish(self, state: StateDict, env: MergeEnv) -> StateDict:
        b, h = self._indices(len(env.run_sds))
        record: dict = {"backbone": b, "head": h, "repair_epochs": int(self.config.repair_epochs), "repair_loss": []}
        env.ctx.log["splice"] = record
        if int(self.config.repair_epochs) == 0:
            return state
        data, build = env.need_data(self.name), env.need_builder(self.name)
        model = build(state).to(env.ctx.device)
        for p in model.parameters():
            p.requires_grad_(self.config.repair == "all")
        for p in model.get_submodule("head").parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=float(self.config.lr))
        step = 0
        for epoch in range(int(self.config.repair_epochs)):
            model.train() if self.config.repair == "all" else model.eval()  # head-only: frozen BN stats
            total, n = 0.0, 0
            for batch in data.train_retain.loader(int(self.config.batch_size), shuffle=True,
                                                  seed=env.ctx.rank_seed + epoch):
                x, y = batch["image"].to(env.ctx.device), batch["label"].to(env.ctx.device)
                loss = F.cross_entropy(model(x), y)
                check_finite_loss(loss, "splice repair", step)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n, step = total + float(loss.detach()) * len(y), n + len(y), step + 1
            record["repair_loss"].append(total / max(1, n))
        model.eval()
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
