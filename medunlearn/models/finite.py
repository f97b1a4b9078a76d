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
from medunlearn.models.modes import evaluating


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


OUTPUT_ROWS = 64  # rows per forward pass of check_finite_outputs


@torch.no_grad()
def check_finite_outputs(model: nn.Module, what: str, images: torch.Tensor | None = None, hint: str = "") -> None:
    """Refuse non-finite weights, then run `images` (default: a probe batch) through `model` in eval mode, every
    module's mode restored after, and refuse NaN/inf logits. `hint` (e.g. "lower the learning rate") ends the
    message."""
    check_finite_state(model.state_dict(), what)
    x = images if images is not None else probe_inputs(model)
    if x is None or len(x) == 0:
        return
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    with evaluating(model):
        finite = all(bool(torch.isfinite(model(chunk.to(device))).all()) for chunk in x.split(OUTPUT_ROWS))
    if not finite:
        raise DivergenceError(f"Expected {what} to produce finite outputs, but its logits overflow to NaN or inf "
                              f"on test inputs; {hint + '. ' if hint else ''}nothing was written.")


def check_finite_model(model: nn.Module, what: str = "the unlearned model") -> None:
    """Raise DivergenceError when `model` holds a NaN or inf weight or buffer."""
    check_finite_state(model.state_dict(), what)


def check_finite_loss(loss: torch.Tensor, method: str, step: int) -> None:
    """Raise DivergenceError for a NaN or inf training loss."""
    if not torch.isfinite(loss):
        raise DivergenceError(
            f"{method} diverged: non-finite loss at step {step}; lower the learning rate. No checkpoint was written."
        )
