"""Static reading of a bundle's inference config: network_def, preprocessing, postprocessing.

Nothing in the config is ever executed or imported. MONAI's ConfigParser runs every `$import` and every
`_target_` even when one id is asked for; this resolver only reads text:
- `_target_` must be an allow-listed MONAI network or deterministic transform (argspec.NETWORKS /
  argspec.TRANSFORMS; bare names and `monai.networks.nets.X` / `monai.transforms.X` spellings), and each
  argument must be named in that target's table with a literal of its type (argspec);
- `@id` resolves to the literal at that id of the same config (never to a component, except the
  `transforms` list of a Compose), cycles refused;
- `$` is accepted in exactly these forms: `$torch.<dtype>`, `$monai.utils.CommonKeys.<NAME>`, `$@id` and
  `$@a + @b` (list concatenation); any other expression is refused with the key it sits under;
- `%id` (a macro in the same file) copies that item's text; `%file#id` is refused;
- `imports`, `initialize`, `run` and every other key are never looked at, so `$import scripts` cannot run.
`pretrained` is forced off. Postprocessing output sinks (savers, device moves) are recorded by name and
never built. Every refusal is an UnsafeBundleError (a CheckpointError: one line, exit 2).
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medunlearn.adopt.argspec import NETWORKS, TORCH_DTYPES, TRANSFORMS, UnsafeArgumentError
from medunlearn.errors import CheckpointError
from medunlearn.models.bundle_safety import UnsafeBundleError
from medunlearn.registry import did_you_mean

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
COMMON_KEYS = {"IMAGE": "image", "LABEL": "label", "PRED": "pred", "LOSS": "loss", "METADATA": "metadata"}
SINKS = frozenset({"SaveClassificationd", "ToTensord", "EnsureTyped", "CopyItemsd", "ToDeviced", "SaveImaged"})
_PREFIXES = ("monai.networks.nets.", "monai.transforms.", "monai.apps.")
_ITEM_META = ("_desc_", "_disabled_", "_mode_", "_requires_")
_REF = r"@([A-Za-z0-9_]+(?:(?:::|#)[A-Za-z0-9_]+)*)"
_FORMS = {
    "dtype": re.compile(r"\$(?:torch|np|numpy)\.(\w+)"),
    "common_keys": re.compile(r"\$monai\.utils\.CommonKeys\.(\w+)"),
    "reference": re.compile(r"\$" + _REF),
    "concat": re.compile(r"\$" + _REF + r"(?:\s*\+\s*" + _REF + r")+"),
}
MAX_CONFIG_BYTES = 4_000_000


@dataclass
class Component:
    """An allow-listed `_target_` (bare name) and its checked literal arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": copy.deepcopy(self.args)}


@dataclass
class ResolvedBundle:
    """What medunlearn takes from a bundle config: its network, preprocessing steps and postprocessing."""

    network: Component
    preprocessing: list[Component]
    postprocessing: list[Component]
    config_name: str


def refuse(msg: str) -> None:
    raise UnsafeBundleError(msg + "; refusing this bundle (nothing in it was run).")


def read_config(path: Path) -> dict[str, Any]:
    """JSON or YAML (safe_load: no tags, no Python objects) as a dict."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        refuse(f"Expected {path.name} under {MAX_CONFIG_BYTES:,} bytes, but it has {path.stat().st_size:,}")
    text = path.read_text(encoding="utf-8", errors="strict")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CheckpointError(f"Expected {path.name} to be valid {path.suffix[1:].upper()}, but it is not "
                              f"({str(exc).splitlines()[0][:100]}).") from exc
    if not isinstance(data, dict):
        refuse(f"Expected {path.name} to hold a mapping, but got {type(data).__name__}")
    return data


def find_config(bundle: Path) -> Path:
    found = [bundle / "configs" / n for n in CONFIG_NAMES if (bundle / "configs" / n).is_file()]
    if len(found) != 1:
        raise CheckpointError(f"Expected exactly one configs/inference.json or .yaml in the bundle, but got "
                              f"{len(found)}.")
    return found[0]


def bare_target(target: Any, where: str, table: dict[str, Any]) -> str:
    """The allow-listed bare name of `target`, else refused with its name and the nearest allowed one."""
    if not isinstance(target, str):
        refuse(f"Expected a _target_ name at {where}, but got {type(target).__name__}")
    name = target
    for prefix in _PREFIXES:
        if target.startswith(prefix):
            name = target[len(prefix):]
            break
    if name not in table or "." in name:
        refuse(f"Expected {where} _target_ to be one of {len(table)} allowed MONAI classes, but got {target!r}"
               f"{did_you_mean(name, list(table))}")
    return name


class _Resolver:
    def __init__(self, config: dict[str, Any], source: str) -> None:
        self.config, self.source = config, source
        self.stack: list[str] = []  # references being resolved (a cycle is refused)

    def lookup(self, ref: str, where: str) -> Any:
        node: Any = self.config
        for part in re.split(r"::|#", ref):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                refuse(f"Expected @{ref} (at {where}) to name an item of {self.source}, but it does not")
        if ref in self.stack:
            refuse(f"Expected no circular references in {self.source}, but @{ref} refers to itself")
        return node

    def reference(self, ref: str, where: str, allow_component: bool) -> Any:
        node = self.lookup(ref, where)
        self.stack.append(ref)
        try:
            value = self.value(node, f"@{ref}", allow_component)
        finally:
            self.stack.pop()
        return value

    def expression(self, text: str, where: str, allow_component: bool) -> Any:
        body = text.strip()
        m = _FORMS["dtype"].fullmatch(body)
        if m and m.group(1) in TORCH_DTYPES:
            return m.group(1)
        m = _FORMS["common_keys"].fullmatch(body)
        if m and m.group(1) in COMMON_KEYS:
            return COMMON_KEYS[m.group(1)]
        m = _FORMS["reference"].fullmatch(body)
        if m:
            return self.reference(m.group(1), where, allow_component)
        if _FORMS["concat"].fullmatch(body):
            out: list[Any] = []
            for ref in re.findall(_REF, body):
                part = self.reference(ref, where, allow_component)
                if not isinstance(part, list):
                    refuse(f"Expected list concatenation at {where} to join lists, but @{ref} is not a list")
                out += part
            return out
        refuse(f"Expected {where} to use only a harmless $ form (torch dtype, monai.utils.CommonKeys, @reference, "
               f"list concatenation), but got {body[:60]!r}")

    def value(self, node: Any, where: str, allow_component: bool = False) -> Any:
        if isinstance(node, str):
            if node.startswith("$"):
                return self.expression(node, where, allow_component)
            if node.startswith("@"):
                if not re.fullmatch(_REF, node):
                    refuse(f"Expected a plain @reference at {where}, but got {node[:60]!r}")
                return self.reference(node[1:], where, allow_component)
            if node.startswith("%"):
                ref = node[1:]
                if not re.fullmatch(_REF[1:], ref):
                    refuse(f"Expected a % macro within {self.source} only, but got {node[:60]!r} at {where}")
                return self.value(copy.deepcopy(self.lookup(ref, where)), where, allow_component)
            return node
        if isinstance(node, dict):
            if "_target_" in node:
                if not allow_component:
                    refuse(f"Expected a literal value at {where}, but got a {node.get('_target_')!r} component")
                return node  # components are resolved by the caller, which knows the table
            return {k: self.value(v, f"{where}::{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [self.value(v, f"{where}::{i}", allow_component) for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float)):
            return node
        refuse(f"Expected JSON data at {where}, but got {type(node).__name__}")

    def component(self, node: Any, where: str, table: dict[str, dict], sinks: frozenset = frozenset()) -> Component:
        if isinstance(node, str) and node.startswith(("@", "$", "%")):
            node = self.value(node, where, allow_component=True)
        if not isinstance(node, dict) or "_target_" not in node:
            refuse(f"Expected a component with a _target_ at {where}, but got {type(node).__name__}")
        name = bare_target(node["_target_"], where, {**table, **{s: {} for s in sinks}})
        if name in sinks:
            return Component(name, {"_not_built": True})
        for meta in _ITEM_META:
            if meta in node and meta not in ("_desc_",):
                if meta == "_disabled_" and node[meta] is False:
                    continue
                refuse(f"Expected no {meta} at {where} ({name}), but got {str(node[meta])[:40]!r}")
        spec, args = table[name], {}
        for key, raw in node.items():
            if key in ("_target_", "_desc_", "_disabled_"):
                continue
            if name == "Compose" and key == "transforms":
                continue
            if key not in spec:
                refuse(f"Expected {name} arguments among {sorted(spec)}, but got {key!r} at {where}"
                       f"{did_you_mean(key, list(spec))}")
            value = self.value(raw, f"{where}::{key}")
            try:
                args[key] = spec[key].check(value, f"{where}::{key} ({name}.{key})")
            except UnsafeArgumentError as exc:
                raise UnsafeBundleError(str(exc)) from exc
        if "pretrained" in spec:
            args["pretrained"] = False
        return Component(name, args)

    def pipeline(self, node: Any, where: str, sinks: frozenset = frozenset()) -> list[Component]:
        """A Compose (or a bare list of transforms) flattened to its steps."""
        if isinstance(node, str) and node.startswith(("@", "$", "%")):
            node = self.value(node, where, allow_component=True)
        if isinstance(node, list):
            items = node
        else:
            comp = self.component(node, where, TRANSFORMS, sinks)
            if comp.name != "Compose":
                return [comp]
            items = self.value(node.get("transforms", []), f"{where}::transforms", allow_component=True)
            if not isinstance(items, list):
                refuse(f"Expected a list of transforms at {where}::transforms, but got {type(items).__name__}")
        steps: list[Component] = []
        for i, item in enumerate(items):
            sub = f"{where}::transforms::{i}"
            if isinstance(item, dict) and bare_target(item.get("_target_"), sub, {**TRANSFORMS, **{
                    s: {} for s in sinks}}) == "Compose":
                steps += self.pipeline(item, sub, sinks)
            else:
                steps.append(self.component(item, sub, TRANSFORMS, sinks))
        return steps


def resolve_config(config: dict[str, Any], source: str = "inference.json") -> ResolvedBundle:
    """Statically resolve network_def, preprocessing and postprocessing of a parsed config."""
    r = _Resolver(config, source)
    for key in ("network_def", "preprocessing"):
        if key not in config:
            raise CheckpointError(f"Expected {source} to define {key!r}, but it does not.")
    network = r.component(config["network_def"], "network_def", NETWORKS)
    pre = r.pipeline(config["preprocessing"], "preprocessing")
    post = r.pipeline(config["postprocessing"], "postprocessing", SINKS) if "postprocessing" in config else []
    return ResolvedBundle(network, pre, post, source)


def resolve_bundle(bundle: str | Path) -> ResolvedBundle:
    """resolve_config over the bundle folder's configs/inference.json|yaml."""
    path = find_config(Path(bundle))
    return resolve_config(read_config(path), path.name)
