"""Sane bounds for numeric options and hyperparameters, so a typo cannot run for days or flip a rule.

Every numeric hyperparameter of an unlearning method or of training is a count, a rate, a weight or a
margin: none is meaningfully negative, and none needs astronomic values. Names decide the tighter caps.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from medunlearn.errors import ConfigError

MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_LR = 10.0
MAX_PERCENT = 100.0
MAX_ANY = 1e6


def _cap(name: str) -> tuple[float, str]:
    if name == "epochs" or name.endswith("_epochs") or name in ("msteps", "rounds"):
        return MAX_EPOCHS, "epochs"
    if name.endswith("batch_size") or name.endswith("_samples") or name in ("max_eval", "membership_rows"):
        return MAX_BATCH, "a batch"
    if name == "image_size":
        return 4096, "pixels"
    if name == "lr" or name.endswith("_lr"):
        return MAX_LR, "a learning rate"
    if "margin" in name or name.endswith("_tol") or name.endswith("_pct"):
        return MAX_PERCENT, "percentage points"
    return MAX_ANY, "any option"


def check_config_bounds(cfg: Any, what: str) -> None:
    """Refuse negative, non-finite or absurdly large numeric fields of dataclass `cfg` (ConfigError)."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        top, kind = _cap(field.name)
        low = 1 if field.name.endswith("batch_size") else 0  # a batch of 0 images divides by zero downstream
        if not math.isfinite(value) or value < low or value > top:
            raise ConfigError(f"Expected {what} option {field.name} between {low} and {top:g} ({kind}), but got "
                              f"{value!r}.")


def check_weights_file(arch: dict, weights: Any, where: str) -> None:
    """Refuse an architecture record whose tensors do not match the weights file's header, before a single
    tensor is allocated: a tampered meta.json could otherwise make the loader allocate gigabytes first.
    Shapes come from the architecture built on the meta device and the safetensors header (no data read)."""
    import torch
    from safetensors import SafetensorError, safe_open

    from medunlearn.errors import CheckpointError
    from medunlearn.models.zoo import model_from_arch

    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in model_from_arch(dict(arch)).state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError):
        return  # a corrupt file is reported by the loader with its own message
    bad = [k for k in want if got.get(k, want[k]) != want[k]]
    if bad:
        raise CheckpointError(f"Expected the architecture in {where} to match its weights file, but tensor "
                              f"{bad[0]!r} is {want[bad[0]]} there and {got[bad[0]]} in the file ({len(bad)} "
                              "mismatches); meta.json was changed after the checkpoint was written.")
