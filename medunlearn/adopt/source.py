"""SRC -> what adoption needs: the resolved network and preprocessing, the weights, the source's hashes.

SRC is a bundle folder (configs/inference.json|yaml, configs/metadata.json, models/model.pt and/or
models/model.ts), a TorchScript file, or a state dict (.pt) with `--arch` {"network", "args"} and a
preprocessing description (a JSON list of MONAI transforms, resolved by the same allow-list). A TorchScript
file is read with torch.jit.load (never run) and adopted only when its state dict loads strictly into the
allow-listed architecture named by its embedded inference.json (MONAI's ckpt_export) or by `--arch`.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medunlearn.adopt.networks import read_model_pt
from medunlearn.adopt.resolver import ResolvedBundle, find_config, read_config, resolve_config
from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.models.bundle_safety import check_metadata
from medunlearn.provenance import sha256_file

KINDS = ("bundle", "torchscript", "state_dict")


@dataclass
class Source:
    kind: str
    resolved: ResolvedBundle
    state: dict[str, torch.Tensor]
    container: dict[str, Any]
    weights_sha256: str
    files: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def _torchscript_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, embedded extra files as JSON) of a TorchScript archive; its code is never called."""
    extra = {"inference.json": "", "metadata.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ts = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            raise CheckpointError(f"Expected a TorchScript archive at {path.name}, but torch.jit.load refused it "
                                  f"({type(exc).__name__}).") from exc
    state = {k: v.detach().clone() for k, v in ts.state_dict().items()}
    parsed = {}
    for name, text in extra.items():
        if text:
            try:
                parsed[name] = json.loads(text)
            except ValueError as exc:
                raise CheckpointError(f"Expected the {name} embedded in {path.name} to be JSON, "
                                      "but it is not.") from exc
    return state, parsed


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or n.endswith("/code/__torch__.py") or "/code/" in n
                   for n in z.namelist())


def _arch_config(arch: dict[str, Any] | None, preprocessing: Any, postprocessing: Any = None) -> dict[str, Any]:
    if not isinstance(arch, dict) or "network" not in arch:
        raise ConfigError('Expected --arch as JSON {"network": "DenseNet121", "args": {...}}, but got '
                          f"{arch!r}.")
    if preprocessing is None:
        raise ConfigError("Expected a preprocessing description (a JSON list of MONAI transforms) with --arch, but "
                          "got none; medunlearn does not guess a deployed model's preprocessing.")
    config = {"network_def": {"_target_": arch["network"], **dict(arch.get("args") or {})},
              "preprocessing": {"_target_": "Compose", "transforms": preprocessing}}
    if postprocessing is not None:
        config["postprocessing"] = {"_target_": "Compose", "transforms": postprocessing}
    return config


def open_source(src: str | Path, arch: dict[str, Any] | None = None, preprocessing: Any = None,
                postprocessing: Any = None) -> Source:
    """Read SRC without running anything in it."""
    p = Path(src)
    if p.is_dir():
        cfg = find_config(p)
        resolved = resolve_config(read_config(cfg), cfg.name)
        meta_path = p / "configs" / "metadata.json"
        metadata = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        check_metadata(metadata)
        pt, ts = p / "models" / "model.pt", p / "models" / "model.ts"
        if pt.is_file():
            state, container = read_model_pt(pt)
            weights = pt
        elif ts.is_file():
            state, _ = _torchscript_state(ts)
            container, weights = {"wrapper": None, "prefix": ""}, ts
        else:
            raise CheckpointError("Expected models/model.pt or models/model.ts in the bundle, but got neither.")
        files = {str(f.relative_to(p)): sha256_file(f) for f in sorted(p.rglob("*")) if f.is_file()}
        return Source("bundle", resolved, state, container, sha256_file(weights), files, metadata)
    if not p.is_file():
        raise CheckpointError(f"Expected SRC to be a bundle folder, a TorchScript file or a state dict, but "
                              f"{p.name!r} does not exist.")
    files = {p.name: sha256_file(p)}
    if is_torchscript(p):
        state, extra = _torchscript_state(p)
        if "inference.json" in extra and arch is None:
            resolved = resolve_config(extra["inference.json"], f"{p.name}:inference.json")
        else:
            resolved = resolve_config(_arch_config(arch, preprocessing, postprocessing), "--arch")
        metadata = extra.get("metadata.json", {})
        check_metadata(metadata)
        return Source("torchscript", resolved, state, {"wrapper": None, "prefix": ""}, files[p.name], files, metadata)
    state, container = read_model_pt(p)
    resolved = resolve_config(_arch_config(arch, preprocessing, postprocessing), "--arch")
    return Source("state_dict", resolved, state, container, files[p.name], files, {})


def bundle_class_names(metadata: dict[str, Any], outputs: int) -> list[str] | None:
    """Class names by output index from metadata.json's outputs.pred.channel_def, when complete."""
    try:
        cdef = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError):
        return None
    if not isinstance(cdef, dict):
        return None
    names = [cdef.get(str(i)) for i in range(outputs)]
    return [str(n) for n in names] if all(isinstance(n, str) and n for n in names) else None
