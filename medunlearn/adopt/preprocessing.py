"""A bundle's preprocessing, decomposed: reader / channel / geometry steps in the data loader, the intensity
step in the model's input-normalisation slot (models.intensity).

meta["preprocessing"] (the spec every command reads from the checkpoint; data.datasets.load_images runs it):
  {"version": 1, "source": "bundle" | "description",
   "image_key": the bundle's image key,
   "steps": every resolved preprocessing step [{"name", "args"}] as the bundle wrote it (the record),
   "loader_steps": the steps the loader runs (keys renamed to "image", LoadImaged image_only),
   "intensity": {"name": "ScaleIntensity" | "ScaleIntensityRange" | "NormalizeIntensity" | "identity",
                 its MONAI arguments, "scale": s, "offset": o},
   "intensity_in": "model" | "loader",
   "pixel_map": {"scale": s, "offset": o}   # loader output u = (x - o) / s
   "in_channels": C, "spatial_size": [H, W] | null}
The intensity step moves into the model only when nothing but dtype casts follows it (then the move is
exact); otherwise the whole pipeline runs in the loader and the slot is the identity (intensity_in
"loader"). s is a power of two >= the largest |x| seen on the adoption sample (o = -s/2 when x < 0
occurs), so u lies in [0, 1] on that sample and u * s + o gives x back exactly.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from medunlearn.adopt.resolver import Component
from medunlearn.errors import CheckpointError

INTENSITY = {"ScaleIntensityd": "ScaleIntensity", "ScaleIntensityRanged": "ScaleIntensityRange",
             "NormalizeIntensityd": "NormalizeIntensity"}
CASTS = ("CastToTyped", "EnsureTyped", "ToTensord")
VERSION = 1


def _image_key(steps: list[Component]) -> str:
    for s in steps:
        if s.name == "LoadImaged":
            keys = s.args.get("keys", [])
            if len(keys) != 1:
                raise CheckpointError(f"Expected LoadImaged to read one image key, but it reads {keys}; refusing "
                                      "(medunlearn adopts single-image classifiers).")
            return keys[0]
    raise CheckpointError("Expected the bundle preprocessing to start by reading the image (LoadImaged), but it "
                          "has no LoadImaged.")


def _loader_step(step: Component, key: str) -> dict[str, Any] | None:
    args = copy.deepcopy(step.args)
    keys = args.get("keys", [key])
    if key not in keys:
        return None  # a step on another key (a label) does not change the image
    args["keys"] = ["image"]
    if step.name == "LoadImaged":
        args["image_only"] = True
    return {"name": step.name, "args": args}


def plan(steps: list[Component]) -> dict[str, Any]:
    """The decomposed spec (pixel_map still identity: set by `with_pixel_map` once images are seen)."""
    key = _image_key(steps)
    idx = [i for i, s in enumerate(steps) if s.name in INTENSITY and key in s.args.get("keys", [])]
    if len(idx) > 1:
        raise CheckpointError(f"Expected at most one intensity step, but the bundle has {len(idx)}; refusing.")
    after = steps[idx[0] + 1:] if idx else []
    movable = bool(idx) and all(s.name in CASTS and s.args.get("dtype", "float32") == "float32" for s in after)
    loader: list[dict[str, Any]] = []
    intensity: dict[str, Any] = {"name": "identity"}
    for i, s in enumerate(steps):
        if idx and i == idx[0] and movable:
            intensity = {"name": INTENSITY[s.name], **{k: v for k, v in s.args.items()
                                                      if k not in ("keys", "allow_missing_keys", "dtype")}}
            if intensity["name"] == "ScaleIntensity" and "minv" not in s.args and "factor" not in s.args:
                intensity.update(minv=0.0, maxv=1.0)
            continue
        if movable and i > idx[0]:
            continue  # float32 casts after the moved step: the model computes in float32
        step = _loader_step(s, key)
        if step is not None:
            loader.append(step)
    size = next((s.args.get("spatial_size") for s in steps if s.name == "Resized"), None)
    return {"version": VERSION, "source": "bundle", "image_key": key, "steps": [s.to_dict() for s in steps],
            "loader_steps": loader, "intensity": intensity, "intensity_in": "model" if movable else "loader",
            "pixel_map": {"scale": 1.0, "offset": 0.0}, "in_channels": None, "spatial_size": size}


def pixel_map_for(images: torch.Tensor) -> dict[str, float]:
    """Power-of-two scale (and offset when negative values occur) mapping `images` into [0, 1]."""
    top = float(images.abs().max()) if images.numel() else 1.0
    s = 2.0 ** math.ceil(math.log2(top)) if top > 0 else 1.0
    if float(images.min()) < 0:
        return {"scale": 2.0 * s, "offset": -s}
    return {"scale": s, "offset": 0.0}


def with_pixel_map(spec: dict[str, Any], raw: torch.Tensor) -> dict[str, Any]:
    """spec with pixel_map (from raw loader output at scale 1) copied into the intensity slot."""
    out = copy.deepcopy(spec)
    pm = pixel_map_for(raw) if spec["intensity_in"] == "model" else {"scale": 1.0, "offset": 0.0}
    out["pixel_map"] = pm
    out["intensity"].update(pm)
    out["in_channels"] = int(raw.shape[1])
    if out["spatial_size"] is None:
        out["spatial_size"] = [int(v) for v in raw.shape[2:]]
    return out


def head_kind(post: list[Component], outputs: int) -> str:
    """"softmax" or "sigmoid1" from the postprocessing activation; multi-label and unclear heads refused."""
    act = next((p for p in post if p.name == "Activationsd"), None)
    sigmoid = bool(act and act.args.get("sigmoid") is True)
    softmax = bool(act and act.args.get("softmax") is True)
    if outputs == 1:
        if not sigmoid:
            raise CheckpointError("Expected a single-output network to have a sigmoid activation in "
                                  "postprocessing, but it has none; refusing (ambiguous head).")
        return "sigmoid1"
    if sigmoid:
        raise CheckpointError(f"Expected a softmax / argmax head over {outputs} classes, but postprocessing applies "
                              "a sigmoid (multi-label); refusing to adopt it.")
    if act is not None and not softmax and act.args.get("sigmoid") not in (None, False):
        raise CheckpointError("Expected a plain softmax or sigmoid activation, but got a per-key mixture; refusing.")
    return "softmax"
