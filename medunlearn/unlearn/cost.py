"""Hardware-independent cost: images processed with a gradient (forward + backward) and forward only, per phase.

`counting()` installs one pair of global module hooks for as long as a counter is open and counts the batch size
of every TOP-LEVEL call of a module with parameters (a call made while no other module's forward is running: a
model's own sub-modules are not counted again; a loss module has no parameters and is not a model pass). A call
made with autograd on counts as a gradient pass (every such call in this package is followed by a backward), one
under `torch.no_grad()` / eval probes as forward only. Every open counter counts each call under its own current
phase, so a run's counter and an enclosing benchmark's both see it.

A pass through PART of a model (FAMR's cached prefix, prefix.py: the frozen blocks once per row, the trained
blocks at every step) counts the part's share of the whole model's FLOPs per image (`weigh_passes`, set from
`flop_share`), so a run on cached features is charged what it computes, not a whole pass per suffix call.

Units: `forward_equivalents` = forward + 3 × gradient images (a backward costs about two forwards, the usual
estimate for convolutional nets); `rte_compute` = the retrain's forward-equivalents / the method's. Both are
stated beside wall time because on a shared machine a wall-time ratio moves with the neighbours' load.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

BACKWARD_FACTOR = 3  # forward-equivalents of one image through forward + backward
WEIGHT_ATTR = "_medunlearn_pass_share"  # a module's share of a whole-model pass (weigh_passes); 1 when unset


class ImageCounter:
    """Images per phase: {phase: {"grad": n, "forward": n}}. `phase(name)` sets where the next calls go."""

    def __init__(self, phase: str = "other") -> None:
        self.counts: dict[str, dict[str, float]] = {}  # fractional: a part of a model counts its FLOP share
        self.current = phase

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        prev, self.current = self.current, name
        try:
            yield
        finally:
            self.current = prev

    def add(self, n: float, grad: bool, phase: str | None = None) -> None:
        rec = self.counts.setdefault(phase or self.current, {"grad": 0.0, "forward": 0.0})
        rec["grad" if grad else "forward"] += float(n)

    def merge(self, other: ImageCounter | dict[str, dict[str, float]], phase: str | None = None) -> None:
        """Add another counter's counts (all under `phase` when given, else phase by phase)."""
        counts = other.counts if isinstance(other, ImageCounter) else other
        for name, rec in counts.items():
            self.add(rec.get("grad", 0), True, phase or name)
            self.add(rec.get("forward", 0), False, phase or name)

    def total(self) -> dict[str, int]:
        """Whole images (rounded) with a gradient and forward only, over every phase."""
        return _whole({"grad": sum(r["grad"] for r in self.counts.values()),
                       "forward": sum(r["forward"] for r in self.counts.values())})

    def record(self) -> dict[str, Any]:
        """JSON-ready: images per phase, their total and forward-equivalents (whole images, rounded)."""
        total = self.total()
        return {"unit": "images", "phases": {k: _whole(v) for k, v in self.counts.items()}, "total": total,
                "forward_equivalents": forward_equivalents(total),
                "convention": f"forward-equivalents = forward + {BACKWARD_FACTOR} x gradient images"}


def _whole(rec: dict[str, float]) -> dict[str, int]:
    return {k: int(round(v)) for k, v in rec.items()}


def forward_equivalents(rec: Mapping[str, float]) -> int:
    return int(round(float(rec.get("forward", 0)) + BACKWARD_FACTOR * float(rec.get("grad", 0))))


def weigh_passes(module: nn.Module, share: float) -> None:
    """Count a top-level call of `module` as `share` of a whole-model pass per image (0 < share <= 1)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"Expected a pass share in (0, 1], but got {share}.")
    setattr(module, WEIGHT_ATTR, float(share))


@torch.no_grad()
def flop_share(part: nn.Module, part_input: torch.Tensor, whole: nn.Module, whole_input: torch.Tensor) -> float:
    """`part`'s forward FLOPs on `part_input` over `whole`'s on `whole_input` (one row each is enough), in
    (0, 1]. Both run in eval mode (no BatchNorm statistic moves); their train/eval flags are restored."""
    from torch.utils.flop_counter import FlopCounterMode

    def flops(m: nn.Module, x: torch.Tensor) -> int:
        flags = [(mod, mod.training) for mod in m.modules()]
        m.eval()
        try:
            with FlopCounterMode(display=False) as fc:
                m(x)
        finally:
            for mod, flag in flags:
                mod.training = flag
        return int(fc.get_total_flops())

    whole_flops = flops(whole, whole_input)
    if whole_flops <= 0:
        return 1.0
    return min(1.0, max(flops(part, part_input) / whole_flops, 1e-6))


def rte_compute(reference_cost: dict[str, Any] | None, method_cost: dict[str, Any] | None) -> float | None:
    """The retrain's forward-equivalents over the method's (None when either is unknown or the method's is 0)."""
    if not reference_cost or not method_cost:
        return None
    ref, own = reference_cost.get("forward_equivalents"), method_cost.get("forward_equivalents")
    if not ref or not own:
        return None
    return float(ref) / float(own)


# ---------------------------------------------------------------- the hooks (one pair while any counter is open)
_OPEN: list[ImageCounter] = []
_DEPTH = [0]
_HANDLES: list[Any] = []


def _batch(args: tuple) -> int:
    for a in args:
        if isinstance(a, torch.Tensor):
            return int(a.shape[0]) if a.dim() else 1
    return 0


def _pre(module: nn.Module, args: tuple) -> None:
    # a parameter-free top-level module (a loss such as nn.CrossEntropyLoss, a transform) is not a pass through a
    # model: counting it double-counted every training batch of models/train.py
    if _DEPTH[0] == 0 and next(module.parameters(), None) is not None:
        n, grad = _batch(args) * getattr(module, WEIGHT_ATTR, 1.0), torch.is_grad_enabled()
        for c in _OPEN:
            c.add(n, grad)
    _DEPTH[0] += 1


def _post(module: nn.Module, args: tuple, output: Any) -> None:
    _DEPTH[0] = max(0, _DEPTH[0] - 1)


@contextlib.contextmanager
def counting(counter: ImageCounter | None = None, phase: str | None = None) -> Iterator[ImageCounter]:
    """Count top-level module calls into `counter` (a new one when None) while the block runs."""
    counter = counter or ImageCounter()
    if any(c is counter for c in _OPEN):  # already counting (a caller's counter handed down): count once
        if phase is None:
            yield counter
        else:
            with counter.phase(phase):
                yield counter
        return
    if not _OPEN:
        _DEPTH[0] = 0
        _HANDLES[:] = [nn.modules.module.register_module_forward_pre_hook(_pre),
                       nn.modules.module.register_module_forward_hook(_post, always_call=True)]
    _OPEN.append(counter)
    try:
        if phase is None:
            yield counter
        else:
            with counter.phase(phase):
                yield counter
    finally:
        _OPEN.remove(counter)
        if not _OPEN:
            for h in _HANDLES:
                h.remove()
            _HANDLES.clear()
