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
