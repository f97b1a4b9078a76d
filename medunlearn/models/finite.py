"""Refuse models that hold or produce non-finite numbers before they are written, exported or used.

A merge with huge weights (or a diverged optimiser) yields NaN/inf tensors; such a model must never
reach disk or a deployable bundle. Finite weights can still overflow to inf logits, so outputs are
probed too.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from medunlearn.errors import DivergenceError


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding any NaN or inf."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]


def check_finite_state(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise DivergenceError naming the first non-finite tensors of `state`."""
    bad = nonfinite_tensors(state)
    if bad:
        raise DivergenceError(f"Expected {what} to hold finite weights, but {len(bad)} of {len(state)} tensors "
                              f"hold NaN or inf (e.g. {bad[:3]}); nothing was written.")


def probe_inputs(model: nn.Module, n: int = 4, seed: int = 0) -> torch.Tensor | None:
    """Seeded uniform [0, 1] images in the model's input shape (from its `.arch`), or None if unknown."""
    kw = (getattr(model, "arch", None) or {}).get("kwargs", {})
    size, chans = kw.get("image_size"), kw.get("in_channels", 1)
    if not isinstance(size, int) or not isinstance(chans, int):
        return None
    dims = int(kw.get("spatial_dims", 2) or 2)
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n, chans, *([size] * dims)), generator=gen)


@torch.no_grad()
def check_finite_outputs(model: nn.Module, what: str, images: torch.Tensor | None = None) -> None:
    """Run `images` (default: a probe batch) through `model` in eval mode; refuse NaN/inf logits."""
    check_finite_state(model.state_dict(), what)
    x = images if images is not None else probe_inputs(model)
    if x is None or len(x) == 0:
        return
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        logits = model(x.to(param.device if param is not None else "cpu"))
    finally:
        model.train(was_training)
    if not bool(torch.isfinite(logits).all()):
        raise DivergenceError(f"Expected {what} to produce finite outputs, but its logits overflow to NaN or inf "
                              "on test inputs; nothing was written.")
