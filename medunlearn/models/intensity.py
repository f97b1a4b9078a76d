"""The input-normalisation slot of an adopted model: a bundle's intensity step, per sample, inside the model.

The data loader gives the model pixels u in [0, 1] (one fixed affine of the bundle's raw intensities,
u = (x - offset) / scale, with scale a power of two so the map is exact in float32); this module maps u
back to x and applies the bundle's own intensity step to each sample, as MONAI would:
ScaleIntensity (min-max to [minv, maxv], or x * (1 + factor)), ScaleIntensityRange (fixed window, optional
clip) or NormalizeIntensity (mean/std, optionally over nonzero voxels and per channel). So pixel-space
methods (PSG's ε-ball, its [0, 1] clamp) act on the image as loaded, and the network sees exactly what
the bundle's pipeline would give it. Shapes: (B, C, *spatial) -> same.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medunlearn.errors import ConfigError

STEPS = ("identity", "ScaleIntensity", "ScaleIntensityRange", "NormalizeIntensity")


def _f(spec: dict[str, Any], key: str, default: float | None = None) -> float | None:
    value = spec.get(key, default)
    return None if value is None else float(value)


class Intensity(nn.Module):
    """x = u * scale + offset, then the bundle's intensity step per sample (no parameters, no buffers)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        if not isinstance(spec, dict) or spec.get("name", "identity") not in STEPS:
            raise ConfigError(f"Expected an intensity step in {list(STEPS)}, but got {spec!r}.")
        self.name = str(spec.get("name", "identity"))
        self.scale, self.offset = float(spec.get("scale", 1.0)), float(spec.get("offset", 0.0))
        if not self.scale > 0:
            raise ConfigError(f"Expected a positive pixel scale, but got {self.scale}.")
        self.minv, self.maxv = _f(spec, "minv", 0.0), _f(spec, "maxv", 1.0)
        self.factor = _f(spec, "factor")
        self.a_min, self.a_max = _f(spec, "a_min", 0.0), _f(spec, "a_max", 1.0)
        self.b_min, self.b_max = _f(spec, "b_min"), _f(spec, "b_max")
        self.clip = bool(spec.get("clip", False))
        self.nonzero, self.channel_wise = bool(spec.get("nonzero", False)), bool(spec.get("channel_wise", False))
        sub, div = spec.get("subtrahend"), spec.get("divisor")
        self.sub = None if sub is None else [float(v) for v in (sub if isinstance(sub, list) else [sub])]
        self.div = None if div is None else [float(v) for v in (div if isinstance(div, list) else [div])]
        self.spec = dict(spec)

    def _dims(self, x: torch.Tensor) -> list[int]:
        return list(range(2 if self.channel_wise else 1, x.ndim))

    def _minmax(self, x: torch.Tensor) -> torch.Tensor:
        if self.minv is None or self.maxv is None:
            return x * (1.0 + self.factor) if self.factor is not None else x
        dims = self._dims(x)
        lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        span = hi - lo
        flat = span == 0
        norm = (x - lo) / torch.where(flat, torch.ones_like(span), span)
        out = norm * (self.maxv - self.minv) + self.minv
        return torch.where(flat, x * self.minv, out)

    def _range(self, x: torch.Tensor) -> torch.Tensor:
        a_min, a_max = self.a_min, self.a_max
        assert a_min is not None and a_max is not None, "ScaleIntensityRange needs a_min and a_max"
        if a_max == a_min:
            return x - a_min + (self.b_min or 0.0)
        x = (x - a_min) / (a_max - a_min)
        if self.b_min is not None and self.b_max is not None:
            x = x * (self.b_max - self.b_min) + self.b_min
            if self.clip:
                x = x.clamp(self.b_min, self.b_max)
        return x

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        dims = self._dims(x)
        mask = (x != 0) if self.nonzero else torch.ones_like(x, dtype=torch.bool)
        w = mask.to(x.dtype)
        count = w.sum(dim=dims, keepdim=True)
        safe = count.clamp_min(1.0)
        mean = (x * w).sum(dim=dims, keepdim=True) / safe
        std = (((x - mean) ** 2) * w).sum(dim=dims, keepdim=True).div(safe).sqrt()
        shape = [1, -1] + [1] * (x.ndim - 2)
        if self.sub is not None:
            mean = torch.tensor(self.sub, dtype=x.dtype, device=x.device).view(shape if self.channel_wise else [1])
        if self.div is not None:
            std = torch.tensor(self.div, dtype=x.dtype, device=x.device).view(shape if self.channel_wise else [1])
        std = torch.where(std == 0, torch.ones_like(std), std)
        out = (x - mean) / std
        keep = mask & (count > 0)
        return torch.where(keep, out, x)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = u * self.scale + self.offset
        if self.name == "ScaleIntensity":
            return self._minmax(x)
        if self.name == "ScaleIntensityRange":
            return self._range(x)
        if self.name == "NormalizeIntensity":
            return self._normal(x)
        return x
