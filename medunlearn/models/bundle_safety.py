"""Checks that make medunlearn's bundle loader safe for bundles it did not write.

MONAI runs a bundle config as code: any `_target_` is imported and called, any `$` string is passed to
`eval()`, any `%` string pulls in another file. medunlearn never evaluates a config; before it reads one it
checks the whole file against the vocabulary its exporter writes (`bundle_config.ALLOWED_TARGETS` and the
verbatim `bundle_config.EXPRESSIONS`) and refuses anything else, so a tampered bundle is named as such
instead of being passed on. metadata.json must be plain data.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from medunlearn.errors import CheckpointError
from medunlearn.models.bundle_config import ALLOWED_TARGETS, EXPRESSIONS, ZOO_TARGET, inference_config
from medunlearn.registry import did_you_mean

_SHORT = {t.rsplit(".", 1)[1]: t for t in ALLOWED_TARGETS if t.startswith("monai.")}
_ITEM_KEYS = ("_target_", "_requires_", "_disabled_", "_desc_", "_mode_")
_ACTIVE = ("$", "%", "@")  # MONAI reads strings starting with these as expression, macro, reference


class UnsafeBundleError(CheckpointError):
    """A bundle config names code outside medunlearn's vocabulary."""


def _argument_vocabulary() -> dict[str, set[str]]:
    """target -> the argument names medunlearn's exporter writes for it (1 and 3 channels, 2D and 3D)."""
    out: dict[str, set[str]] = {}
    for chans, dims in ((1, 2), (3, 2), (1, 3)):
        for _, _key, value in _walk(inference_config({"name": "allcnn", "kwargs": {}}, 64, chans, dims), ""):
            if isinstance(value, dict) and isinstance(value.get("_target_"), str):
                out.setdefault(value["_target_"], set()).update(k for k in value if k not in _ITEM_KEYS)
    return out


# Argument values MONAI would import or call when given a dotted name: only these spellings are accepted.
_READERS = frozenset({"NibabelReader", "PydicomReader", "ITKReader", "PILReader", "NumpyReader"})
_FILE_ARGS = frozenset({"filename"})  # file names, which MONAI never imports
_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every mapping entry and list item, depth first."""
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f"{path}::{k}" if path else str(k)
            yield sub, k, v
            yield from _walk(v, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            sub = f"{path}::{i}"
            yield sub, i, v
            yield from _walk(v, sub)


def qualified_target(target: str) -> str | None:
    """The allow-listed full name for `target` (MONAI also accepts a bare class name), else None."""
    if target in ALLOWED_TARGETS:
        return target
    return _SHORT.get(target)


def _check_arguments(component: dict[str, Any], target: str, path: str, source: str) -> None:
    """Arguments of an allowed component (`target`: its qualified name): names the exporter writes, and no value
    MONAI would import or call."""
    if target == ZOO_TARGET:
        return  # literal architecture options, bounded by check_arch_bounds when the model is built
    allowed = _ARGS.get(target, set())
    for arg, value in component.items():
        if arg in _ITEM_KEYS:
            continue
        if arg not in allowed:
            raise UnsafeBundleError(f"Expected {target.rsplit('.', 1)[1]} arguments among {sorted(allowed)} in "
                                    f"{source}, but got {arg!r} at {path}; refusing to load this bundle."
                                    f"{did_you_mean(str(arg), sorted(allowed))}")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if arg == "reader" and isinstance(v, str) and v not in _READERS:
                raise UnsafeBundleError(f"Expected reader in {sorted(_READERS)} in {source}, but got {v[:60]!r} at "
                                        f"{path}; refusing to load this bundle.")
            if isinstance(v, str) and _DOTTED.match(v) and arg not in _FILE_ARGS:
                raise UnsafeBundleError(f"Expected no dotted callable name as an argument in {source}, but got "
                                        f"{v[:60]!r} at {path}::{arg}; refusing to load this bundle.")


def check_config(config: Any, source: str = "inference.json") -> None:
    """Refuse a config with a `_target_` off the allow-list, an argument outside its target's vocabulary (or
    naming a callable), an unknown `$` expression, or a `%` macro."""
    if not isinstance(config, dict):
        raise UnsafeBundleError(f"Expected {source} to hold a JSON object, but got {type(config).__name__}.")
    for path, key, value in _walk(config, ""):
        target = None
        if isinstance(value, dict) and isinstance(value.get("_target_"), str):
            target = qualified_target(value["_target_"])
        if target is not None:
            _check_arguments(value, target, path, source)
        if key == "_target_":
            if not isinstance(value, str) or qualified_target(value) is None:
                names = sorted(ALLOWED_TARGETS) + sorted(_SHORT)
                raise UnsafeBundleError(
                    f"Expected every _target_ in {source} to be one of medunlearn's {len(ALLOWED_TARGETS)} "
                    f"allowed MONAI/medunlearn classes, but got {value!r} at {path}; refusing to load this bundle."
                    f"{did_you_mean(str(value), names)}")
        elif key == "_mode_" and value != "default":
            raise UnsafeBundleError(f"Expected no _mode_ other than 'default' in {source}, but got {value!r} at "
                                    f"{path}; refusing to load this bundle.")
        if isinstance(value, str) and value.startswith("$") and value not in EXPRESSIONS:
            raise UnsafeBundleError(f"Expected no $ expressions in {source} beyond those medunlearn writes, but got "
                                    f"{value[:60]!r} at {path}; refusing to load this bundle.")
        if isinstance(value, str) and value.startswith("%"):
            raise UnsafeBundleError(f"Expected no % macros in {source}, but got {value[:60]!r} at {path}; "
                                    "refusing to load this bundle.")


_ARGS = _argument_vocabulary()


def check_metadata(meta: Any, source: str = "metadata.json") -> None:
    """Refuse metadata that MONAI would not read as plain data ($ / % / @ strings, _target_ items)."""
    if not isinstance(meta, dict):
        raise UnsafeBundleError(f"Expected {source} to hold a JSON object, but got {type(meta).__name__}.")
    for path, key, value in _walk(meta, ""):
        if key in _ITEM_KEYS:
            raise UnsafeBundleError(f"Expected plain data in {source}, but got a {key} key at {path}; "
                                    "refusing to load this bundle.")
        if isinstance(value, str) and value.startswith(_ACTIVE):
            raise UnsafeBundleError(f"Expected plain data in {source}, but got {value[:60]!r} at {path} (MONAI "
                                    "would evaluate it); refusing to load this bundle.")


def inert(value: Any) -> Any:
    """`value` with every string MONAI would evaluate ($ / % / @ first) made literal by a leading space.

    Class names, rule text and changelog entries come from user data; in metadata.json they must stay text.
    """
    if isinstance(value, str):
        return " " + value if value.startswith(_ACTIVE) else value
    if isinstance(value, dict):
        return {k: inert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [inert(v) for v in value]
    return value


def literal_args(component: Any, source: str) -> dict[str, Any]:
    """The arguments of a `_target_` component, all plain JSON literals (no reference, expression, macro)."""
    if not isinstance(component, dict):
        raise CheckpointError(f"Expected {source} to be a component with a _target_, but got "
                              f"{type(component).__name__}.")
    args = {k: v for k, v in component.items() if k not in _ITEM_KEYS}
    for path, _, value in _walk(args, source):
        if isinstance(value, str) and value.startswith(_ACTIVE):
            raise UnsafeBundleError(f"Expected literal arguments in {source}, but got {value[:60]!r} at {path}; "
                                    "refusing to load this bundle.")
    return args
