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


def bounded(default: Any, lo: float, hi: float = math.inf, *, open_lo: bool = False, open_hi: bool = False) -> Any:
    """A dataclass field whose value must lie between `lo` and `hi` (an open end excludes it). None always passes
    (a null switches an option off). Read by check_config_bounds."""
    return dataclasses.field(default=default, metadata={"range": (lo, hi), "open": (open_lo, open_hi)})


def declared_range(cls: type, name: str) -> Any:
    """The metadata of field `name`'s nearest declaration with a range along `cls`'s MRO: a subclass that only
    changes a default (`lr: float = 3e-4`) keeps its base's range; None when no class declares one."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "range" in f.metadata:
            return f.metadata
    return None


def describe_range(lo: float, hi: float, open_lo: bool = False, open_hi: bool = False) -> str:
    """"in [0, 100]", "in (0, 1]", "> 0", ">= 1"."""
    if math.isinf(hi):
        return f"{'>' if open_lo else '>='} {lo:g}"
    return f"in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"


def out_of_range(value: float, lo: float, hi: float, open_lo: bool = False, open_hi: bool = False) -> bool:
    return (not math.isfinite(value) or (value <= lo if open_lo else value < lo)
            or (value >= hi if open_hi else value > hi))


def check_config_bounds(cfg: Any, what: str, caps: bool = True) -> None:
    """Refuse a numeric field of dataclass `cfg` outside its declared range (`bounded`: field metadata "range") and,
    with `caps` (the command line: method_config, train), any negative, non-finite or absurdly large numeric field
    (caps by name, above). A method's or merge's constructor checks the declared ranges only: the Python API may
    ask for a huge learning rate (divergence tests do). ConfigError names the field."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        meta = declared_range(type(cfg), field.name)
        if meta is not None:
            (lo, hi), (open_lo, open_hi) = meta["range"], meta.get("open", (False, False))
            if out_of_range(value, lo, hi, open_lo, open_hi):
                raise ConfigError(f"Expected {what} option {field.name} {describe_range(lo, hi, open_lo, open_hi)}, "
                                  f"but got {value!r}.")
        if not caps:
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
