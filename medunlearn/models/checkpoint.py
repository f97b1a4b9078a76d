"""Checkpoints are directories: model.safetensors + meta.json + provenance.json.

Weights are stored with safetensors (no pickle). Plain torch `.pt` state dicts are only ever read with
`torch.load(weights_only=True)`, so a crafted pickle cannot run code. Loading never modifies its input.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medunlearn.bounds import check_weights_file
from medunlearn.commit import staging_dir
from medunlearn.errors import CheckpointError, ConfigError, DataError, DivergenceError
from medunlearn.fileio import read_json, write_json
from medunlearn.models.finite import check_finite_state
from medunlearn.models.zoo import Classifier, model_from_arch
from medunlearn.provenance import code_version, provenance_record, sha256_file

WEIGHTS, META, PROVENANCE = "model.safetensors", "meta.json", "provenance.json"
KINDS = ("base", "retrain", "unlearned", "merged")
ModuleT = TypeVar("ModuleT", bound=nn.Module)
# Bounds on sizes read from meta.json, checked before any tensor is allocated.
MAX_CLASSES, MAX_CHANNELS, MAX_IMAGE_SIZE, MAX_PARAMETERS = 10_000, 64, 4096, 2_000_000_000
# Buffers that are statistics, not learned weights: excluded from weight distances.
_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "normalize.mean", "normalize.std")


def _full_meta(model: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the ARCHITECTURE.md meta keys that can be derived from the model."""
    out = dict(meta)
    arch = getattr(model, "arch", None) or out.get("architecture")
    if not arch:
        raise CheckpointError("Expected a zoo Classifier (with .arch) or meta['architecture'], but got neither.")
    out["architecture"] = copy.deepcopy(arch)
    kw = arch.get("kwargs", {})
    kind = out.setdefault("kind", "base")
    if kind not in KINDS:
        raise ConfigError(f"Expected checkpoint kind in {list(KINDS)}, but got {kind!r}.")
    out.setdefault("class_names", [f"class{k}" for k in range(int(kw.get("num_classes", 0)))])
    out.setdefault("image_size", kw.get("image_size"))
    out.setdefault("in_channels", kw.get("in_channels"))
    out.setdefault("spatial_dims", int(kw.get("spatial_dims", 2)))
    out.setdefault("config", {})
    out.setdefault("seed", None)
    out.setdefault("code_version", code_version())
    out.setdefault("changelog", [])
    out.setdefault("metrics", {})
    return out


def _state_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage, and must not alias live weights
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(out_dir: str | Path, model: nn.Module, meta: Mapping[str, Any], overwrite: bool = False,
                    provenance: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory atomically (staged, then swapped in). Returns its path.

    Refuses an existing non-empty `out_dir` unless `overwrite` (OutputExistsError).
    """
    full = _full_meta(model, meta)
    state = _state_for_save(model)
    check_finite_state(state, f"the {full['kind']} model")
    if provenance is None:
        inputs = {k: str(full[k]) for k in ("cohort_hash", "split_hash", "base_sha256") if full.get(k)}
        provenance = provenance_record(full.get("config", {}), full.get("seed"), inputs)
    with staging_dir(out_dir, overwrite=overwrite) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "kind": str(full["kind"])})
        write_json(tmp / META, full)
        write_json(tmp / PROVENANCE, provenance)
    return Path(out_dir)


def _resolve_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS, META, PROVENANCE):
        p = p.parent  # accept a file inside the checkpoint directory
    if not p.is_dir():
        raise CheckpointError(f"Expected a checkpoint directory with {WEIGHTS} and {META}, but got {str(p)!r} "
                              f"({'a file' if p.exists() else 'it does not exist'}).")
    return p


def read_meta(path: str | Path) -> dict[str, Any]:
    """The meta.json of a checkpoint directory, validated to hold an architecture record."""
    p = _resolve_dir(path)
    try:
        meta = read_json(p / META)
    except DataError as exc:
        raise CheckpointError(str(exc)) from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("architecture"), dict):
        raise CheckpointError(f"Expected {p / META} to hold a dict with an 'architecture' record, but got "
                              f"{type(meta).__name__} without one.")
    check_arch_bounds(meta["architecture"], str(p / META))
    return meta


def check_arch_bounds(arch: Mapping[str, Any], where: str) -> None:
    """Refuse sizes no classifier needs (a tampered meta.json could ask for terabytes) before building."""
    kw = arch.get("kwargs")
    if not isinstance(kw, Mapping):
        kw = {}
    for key, top in (("num_classes", MAX_CLASSES), ("in_channels", MAX_CHANNELS), ("image_size", MAX_IMAGE_SIZE)):
        value = kw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top):
            raise CheckpointError(f"Expected {key} between 1 and {top:,} in {where}, but got {value!r}.")
    for key, value in kw.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not -1e6 <= value <= 1e6:
            raise CheckpointError(f"Expected architecture option {key} within ±1e6 in {where}, but got {value!r}.")


def _count_parameters(arch: Mapping[str, Any]) -> int:
    """Parameters of `arch`, built on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        net = model_from_arch(dict(arch))
    return sum(t.numel() for t in net.state_dict().values())


def read_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors in a checkpoint's model.safetensors (read-only)."""
    f = _resolve_dir(path) / WEIGHTS
    if not f.is_file():
        raise CheckpointError(f"Expected weights at {f}, but the file does not exist.")
    try:
        return load_file(str(f), device=str(torch.device(map_location)))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"Expected a valid safetensors file at {f}, but it is corrupt ({exc}).") from exc


def load_state_into(model: ModuleT, state: Mapping[str, torch.Tensor], source: str = "state dict") -> ModuleT:
    """Strictly load `state` into `model`: every key present, no extras, identical shapes."""
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    if missing or extra:
        raise CheckpointError(f"Expected {source} keys to match the architecture, but got {len(missing)} missing "
                              f"(e.g. {missing[:3]}) and {len(extra)} unexpected (e.g. {extra[:3]}).")
    bad = [(k, tuple(want[k].shape), tuple(state[k].shape)) for k in want if want[k].shape != state[k].shape]
    if bad:
        k, exp, got = bad[0]
        raise CheckpointError(f"Expected {source} tensor {k!r} of shape {exp}, but got {got} "
                              f"({len(bad)} shape mismatches).")
    model.load_state_dict(dict(state), strict=True)
    return model


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model from meta['architecture'] and load its weights. Returns (model in eval mode, meta)."""
    meta = read_meta(path)
    try:
        n_params = _count_parameters(meta["architecture"])
        if n_params > MAX_PARAMETERS:
            raise CheckpointError(f"Expected at most {MAX_PARAMETERS:,} parameters in checkpoint {Path(path).name!r}, "
                                  f"but its architecture record asks for {n_params:,}.")
        check_weights_file(meta["architecture"], _resolve_dir(path) / WEIGHTS, f"checkpoint {Path(path).name!r}")
        model = model_from_arch(meta["architecture"])
    except ConfigError as exc:
        raise CheckpointError(f"Checkpoint {path}: {exc}") from exc
    state = read_weights(path, "cpu")
    load_state_into(model, state, source=f"checkpoint {Path(path).name!r}")
    try:
        check_finite_state(state, f"checkpoint {Path(path).name!r}")
    except DivergenceError as exc:
        raise CheckpointError(str(exc).replace("; nothing was written.", "; refusing to use it.")) from exc
    return model.to(torch.device(map_location)).eval(), meta


def import_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain torch state dict (`.pt`) with weights_only=True; anything that needs pickle code is refused.

    A {"state_dict": {...}} wrapper is unwrapped. Returns name -> tensor on CPU.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"Expected a state-dict file at {str(p)!r}, but it does not exist.")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError...: all mean "not a safe state dict"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"Expected a plain tensor state dict loadable with weights_only=True, but {p.name} "
                              f"was refused ({first}).") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise CheckpointError(f"Expected {p.name} to hold a mapping of names to tensors, but got {type(obj).__name__}.")
    return dict(obj)


def model_sha256(ckpt_dir: str | Path) -> str:
    """sha256 of a checkpoint's model.safetensors (used as `base_sha256` by unlearned/merged checkpoints)."""
    f = _resolve_dir(ckpt_dir) / WEIGHTS
    if not f.is_file():
        raise CheckpointError(f"Expected weights at {f}, but the file does not exist.")
    return sha256_file(f)


def _weights(x: nn.Module | Mapping[str, torch.Tensor] | str | Path) -> dict[str, torch.Tensor]:
    if isinstance(x, nn.Module):
        return {k: v.detach() for k, v in x.named_parameters()}
    state = read_weights(x) if isinstance(x, (str, Path)) else dict(x)
    return {k: v for k, v in state.items() if v.is_floating_point() and not k.endswith(_STAT_SUFFIXES)}


def state_distance(a: nn.Module | Mapping[str, torch.Tensor] | str | Path,
                   b: nn.Module | Mapping[str, torch.Tensor] | str | Path) -> float:
    """L2 distance between two models' learned float weights (BN running stats excluded).

    a, b: modules, state dicts, or checkpoint directories of the same architecture.
    """
    wa, wb = _weights(a), _weights(b)
    if set(wa) != set(wb):
        diff = sorted(set(wa) ^ set(wb))
        raise CheckpointError(f"Expected two models of the same architecture, but {len(diff)} weights differ "
                              f"(e.g. {diff[:3]}).")
    total = 0.0
    for k, va in wa.items():
        vb = wb[k]
        if va.shape != vb.shape:
            raise CheckpointError(f"Expected weight {k!r} of shape {tuple(va.shape)}, but got {tuple(vb.shape)}.")
        total += float(((va.double().cpu() - vb.double().cpu()) ** 2).sum())
    return math.sqrt(total)
