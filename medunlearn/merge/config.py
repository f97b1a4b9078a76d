"""mergekit-style merge YAML, read with ``yaml.safe_load`` semantics and validated strictly.

    merge_method: ties                 # a MERGES name
    base_model: runs/base              # checkpoint dir of the deployed base θ0
    models:                            # the unlearning runs (checkpoint dirs), in order
      - model: runs/psg_scannerx
        parameters: {weight: 1.0, density: 0.3}   # per-run: weight; density for ties / dare_ties
      - model: runs/famr_siteb
    parameters: {scaling: 1.0}         # method Config fields (see configs/merge/<method>.yaml)
    seed: 0                            # optional, default 0 (DARE masks)

Relative paths are taken relative to the working directory (as mergekit does). Unknown keys, duplicate
keys, YAML tags (``!!python/...``), non-numeric numbers and oversized files are refused with ConfigError.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from medunlearn.errors import ConfigError
from medunlearn.merge.base import MERGES
from medunlearn.registry import did_you_mean
from medunlearn.unlearn.base import apply_overrides

TOP_KEYS = ("merge_method", "base_model", "models", "parameters", "seed")
MODEL_KEYS = ("model", "parameters")
MAX_BYTES = 1 << 20


@dataclasses.dataclass
class MergeSpec:
    """A validated merge config. `raw` is the exact parsed YAML (embedded in the merged model's card)."""

    method: str
    base_model: str
    models: list[str]
    weights: list[float] | None
    run_params: list[dict[str, float]]
    parameters: dict[str, Any]
    seed: int = 0
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that also refuses duplicate mapping keys."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise ConfigError(f"Expected plain scalar keys in the merge config, but got {type(key).__name__}.")
        if key in out:
            raise ConfigError(f"Expected each key once in the merge config, but {key!r} appears twice "
                              f"(line {key_node.start_mark.line + 1}).")
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _unknown(where: str, keys: Any, allowed: tuple[str, ...]) -> None:
    for k in keys:
        if k not in allowed:
            raise ConfigError(f"Expected {where} keys in {list(allowed)}, but got {k!r}."
                              f"{did_you_mean(str(k), list(allowed))}")


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"Expected a finite number for {where}, but got {value!r}.")
    return float(value)


def parse_merge_config(doc: Any) -> MergeSpec:
    """Validate an already-parsed merge config mapping."""
    if not isinstance(doc, dict):
        raise ConfigError(f"Expected the merge config to be a mapping, but got {type(doc).__name__}.")
    _unknown("merge config", doc, TOP_KEYS)
    for key in ("merge_method", "base_model", "models"):
        if key not in doc:
            raise ConfigError(f"Expected key {key!r} in the merge config, but it is missing.")
    method = doc["merge_method"]
    if not isinstance(method, str):
        raise ConfigError(f"Expected merge_method to be a name, but got {method!r}.")
    cls = MERGES.get(method)
    if not isinstance(doc["base_model"], str) or not doc["base_model"]:
        raise ConfigError(f"Expected base_model to be a checkpoint path, but got {doc['base_model']!r}.")
    models = doc["models"]
    if not isinstance(models, list) or not models:
        raise ConfigError(f"Expected models to be a non-empty list, but got {type(models).__name__}.")
    paths, weights, run_params = [], [], []
    for i, entry in enumerate(models):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"Expected models[{i}] to be a mapping with 'model', but got {type(entry).__name__}.")
        _unknown(f"models[{i}]", entry, MODEL_KEYS)
        if not isinstance(entry.get("model"), str) or not entry["model"]:
            raise ConfigError(f"Expected models[{i}].model to be a checkpoint path, but got {entry.get('model')!r}.")
        params = entry.get("parameters") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"Expected models[{i}].parameters to be a mapping, but got {type(params).__name__}.")
        _unknown(f"models[{i}].parameters ({method})", params, cls.run_param_names)
        paths.append(entry["model"])
        weights.append(_number(f"models[{i}].parameters.weight", params.get("weight", 1.0)))
        run_params.append({k: _number(f"models[{i}].parameters.{k}", v) for k, v in params.items() if k != "weight"})
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ConfigError(f"Expected parameters to be a mapping, but got {type(parameters).__name__}.")
    cls(method_config(method, parameters))  # field names (did-you-mean), types and ranges
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"Expected seed to be a non-negative integer, but got {seed!r}.")
    any_weight = any("weight" in (m.get("parameters") or {}) for m in models if isinstance(m, dict))
    return MergeSpec(method, doc["base_model"], paths, weights if any_weight else None, run_params,
                     dict(parameters), seed, doc)


def load_merge_config(path: str | Path) -> MergeSpec:
    """Read and validate a merge YAML file (safe loader, no tags, no duplicate keys, at most 1 MiB)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Expected a merge config file at {str(p)!r}, but it does not exist.")
    if p.stat().st_size > MAX_BYTES:
        raise ConfigError(f"Expected a merge config under {MAX_BYTES} bytes, but {p.name} has {p.stat().st_size}.")
    try:
        doc = yaml.load(p.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Expected a plain YAML merge config in {p.name}, "
                          f"but it could not be read ({first}).") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Expected UTF-8 text in {p.name}, but got undecodable bytes.") from exc
    return parse_merge_config(doc)


def method_config(method: str, parameters: dict[str, Any] | None) -> Any:
    """The method's Config dataclass with `parameters` applied (did-you-mean on unknown fields)."""
    cls = MERGES.get(method)
    return apply_overrides(cls.Config(), dict(parameters or {}))
