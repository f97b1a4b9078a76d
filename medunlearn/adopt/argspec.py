"""Typed argument lists for every `_target_` the static resolver allows.

Each allowed MONAI network and transform has a table {argument: Spec}. A resolved argument must be named in
its target's table and its value must be a literal of that spec's type and range, so no argument can smuggle
in a callable (``LoadImaged(reader="os.system")``) or a size no classifier needs (10^12 classes).
Arguments absent from a table are refused with their name; none of these callables is ever called with
anything else.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medunlearn.errors import CheckpointError

TORCH_DTYPES = ("float16", "float32", "float64", "bfloat16", "uint8", "int8", "int16", "int32", "int64", "bool")
READERS = ("PILReader", "PydicomReader", "NibabelReader", "ITKReader", "NumpyReader")
MAX_CLASSES, MAX_CHANNELS, MAX_SIZE, MAX_WIDTH = 10_000, 64, 4096, 4096


class UnsafeArgumentError(CheckpointError):
    """A bundle argument is not a literal of the type its target allows."""


@dataclass(frozen=True)
class Spec:
    """check(value) -> normalised value, or raises UnsafeArgumentError via `fail`."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()
    optional: bool = False

    def check(self, value: Any, where: str) -> Any:
        if value is None and self.optional:
            return None
        fn = _CHECKS[self.kind]
        return fn(self, value, where)


def _fail(where: str, expected: str, value: Any) -> None:
    shown = repr(value) if not isinstance(value, str) else repr(value[:60])
    raise UnsafeArgumentError(f"Expected {where} to be {expected}, but got {shown}; refusing this bundle.")


def _number(spec: Spec, value: Any, where: str, integer: bool) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not (spec.lo <= value <= spec.hi):
        _fail(where, f"{'an integer' if integer else 'a number'} in [{spec.lo:g}, {spec.hi:g}]", value)
    return int(value) if integer else float(value)


def _int(spec: Spec, value: Any, where: str) -> int:
    return _number(spec, value, where, True)


def _float(spec: Spec, value: Any, where: str) -> float:
    return _number(spec, value, where, False)


def _bool(spec: Spec, value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        _fail(where, "true or false", value)
    return value


def _choice(spec: Spec, value: Any, where: str) -> Any:
    if isinstance(value, bool) or value not in spec.choices:
        _fail(where, f"one of {list(spec.choices)}", value)
    return value


def _keys(spec: Spec, value: Any, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(k, str) and k.isidentifier() for k in items):
        _fail(where, "a key name or a list of key names", value)
    return list(items)


def _ints(spec: Spec, value: Any, where: str) -> Any:
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)) or not items or len(items) > 8:
        _fail(where, f"an integer or a list of up to 8 integers in [{spec.lo:g}, {spec.hi:g}]", value)
    return [_int(spec, v, where) for v in items]


def _floats(spec: Spec, value: Any, where: str) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _float(spec, value, where)
    if not isinstance(value, (list, tuple)) or not value or len(value) > 8:
        _fail(where, "a number or a short list of numbers", value)
    return [_float(spec, v, where) for v in value]


def _bools(spec: Spec, value: Any, where: str) -> Any:
    if isinstance(value, bool):
        return value
    if not isinstance(value, list) or not all(isinstance(v, bool) for v in value):
        _fail(where, "true, false or a list of them", value)
    return value


def _dtype(spec: Spec, value: Any, where: str) -> str:
    name = value.split(".", 1)[1] if isinstance(value, str) and value.startswith(("torch.", "np.", "numpy.")) \
        else value
    if name not in TORCH_DTYPES:
        _fail(where, f"a dtype name in {list(TORCH_DTYPES)}", value)
    return name


def _false(spec: Spec, value: Any, where: str) -> bool:
    """`pretrained`: forced off (medunlearn never downloads weights; model.pt holds them)."""
    if not isinstance(value, bool):
        _fail(where, "true or false", value)
    return False


_CHECKS: dict[str, Callable[[Spec, Any, str], Any]] = {
    "int": _int, "float": _float, "bool": _bool, "choice": _choice, "keys": _keys, "ints": _ints,
    "floats": _floats, "bools": _bools, "dtype": _dtype, "false": _false,
}


def I(lo: float, hi: float, optional: bool = False) -> Spec:  # noqa: E743
    return Spec("int", lo, hi, optional=optional)


def F(lo: float = -1e6, hi: float = 1e6, optional: bool = False) -> Spec:
    return Spec("float", lo, hi, optional=optional)


def C(*choices: Any, optional: bool = False) -> Spec:
    return Spec("choice", choices=choices, optional=optional)


B, KEYS, DTYPE, PRETRAINED = Spec("bool"), Spec("keys"), Spec("dtype"), Spec("false")
SIZES = Spec("ints", -1, MAX_SIZE)
DIMS, CLASSES, CHANNELS = I(2, 3), I(1, MAX_CLASSES), I(1, MAX_CHANNELS)
ALLOW_MISSING = {"allow_missing_keys": B}
INTERP = C("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area")

_DENSE = {"spatial_dims": DIMS, "in_channels": CHANNELS, "out_channels": CLASSES, "init_features": I(1, MAX_WIDTH),
          "growth_rate": I(1, MAX_WIDTH), "bn_size": I(1, 64), "dropout_prob": F(0, 1), "pretrained": PRETRAINED,
          "progress": B}
_RESNET = {"spatial_dims": DIMS, "n_input_channels": CHANNELS, "num_classes": CLASSES, "conv1_t_size": I(1, 15),
           "conv1_t_stride": I(1, 8), "no_max_pool": B, "shortcut_type": C("A", "B"), "widen_factor": F(0.01, 16),
           "feed_forward": C(True), "bias_downsample": B, "pretrained": PRETRAINED, "progress": B}
_SE = {"spatial_dims": DIMS, "in_channels": CHANNELS, "num_classes": CLASSES, "layers": Spec("ints", 1, 64),
       "groups": I(1, 64), "reduction": I(1, 64), "dropout_prob": F(0, 1, optional=True), "dropout_dim": I(1, 3),
       "inplanes": I(1, MAX_WIDTH), "downsample_kernel_size": I(1, 7), "input_3x3": B, "pretrained": PRETRAINED,
       "progress": B}
EFFICIENT = tuple(f"efficientnet-b{i}" for i in range(9)) + ("efficientnet-l2",)
_EFF = {"model_name": C(*EFFICIENT), "spatial_dims": DIMS, "in_channels": CHANNELS, "num_classes": CLASSES,
        "pretrained": PRETRAINED, "progress": B, "adv_prop": B}

NETWORKS: dict[str, dict[str, Spec]] = {
    "DenseNet121": _DENSE, "DenseNet169": _DENSE, "DenseNet201": _DENSE,
    "DenseNet": {**_DENSE, "block_config": Spec("ints", 1, 128)},
    **{f"resnet{d}": _RESNET for d in (10, 18, 34, 50)},
    "SEResNet50": _SE, "SEResNet101": _SE, "SEResNet152": _SE, "SEResNext50": _SE,
    "EfficientNetBN": _EFF,
}

TRANSFORMS: dict[str, dict[str, Spec]] = {
    "Compose": {},  # its `transforms` list is resolved item by item
    "LoadImaged": {"keys": KEYS, "reader": C(*READERS, optional=True), "image_only": B, "dtype": DTYPE,
                   "ensure_channel_first": B, "simple_keys": B, "reverse_indexing": B, "swap_ij": B,
                   **ALLOW_MISSING},
    "EnsureChannelFirstd": {"keys": KEYS, "channel_dim": Spec("choice", choices=("no_channel", -1, 0, 1, 2, 3),
                                                              optional=True), **ALLOW_MISSING},
    "AsChannelFirstd": {"keys": KEYS, "channel_dim": I(-4, 3), **ALLOW_MISSING},
    "RepeatChanneld": {"keys": KEYS, "repeats": I(1, MAX_CHANNELS), **ALLOW_MISSING},
    "Resized": {"keys": KEYS, "spatial_size": SIZES, "size_mode": C("all", "longest"), "mode": INTERP,
                "align_corners": Spec("bools", optional=True), "anti_aliasing": B, "anti_aliasing_sigma":
                Spec("floats", 0, 100, optional=True), **ALLOW_MISSING},
    "CastToTyped": {"keys": KEYS, "dtype": DTYPE, **ALLOW_MISSING},
    "EnsureTyped": {"keys": KEYS, "dtype": DTYPE, "data_type": C("tensor", "numpy"), "track_meta": B,
                    **ALLOW_MISSING},
    "ToTensord": {"keys": KEYS, "dtype": DTYPE, "track_meta": B, **ALLOW_MISSING},
    "ScaleIntensityd": {"keys": KEYS, "minv": F(optional=True), "maxv": F(optional=True),
                        "factor": F(optional=True), "channel_wise": B, "dtype": DTYPE, **ALLOW_MISSING},
    "ScaleIntensityRanged": {"keys": KEYS, "a_min": F(-1e6, 1e6), "a_max": F(-1e6, 1e6), "b_min": F(optional=True),
                             "b_max": F(optional=True), "clip": B, "dtype": DTYPE, **ALLOW_MISSING},
    "NormalizeIntensityd": {"keys": KEYS, "subtrahend": Spec("floats", -1e6, 1e6, optional=True),
                            "divisor": Spec("floats", 1e-12, 1e6, optional=True), "nonzero": B, "channel_wise": B,
                            "dtype": DTYPE, **ALLOW_MISSING},
    # postprocessing
    "Activationsd": {"keys": KEYS, "sigmoid": Spec("bools"), "softmax": Spec("bools"), **ALLOW_MISSING},
    "AsDiscreted": {"keys": KEYS, "argmax": Spec("bools"), "to_onehot": I(1, MAX_CLASSES, optional=True),
                    "threshold": F(optional=True), **ALLOW_MISSING},
    "CopyItemsd": {"keys": KEYS, "times": I(1, 8), "names": KEYS, **ALLOW_MISSING},
    "SaveClassificationd": {"keys": KEYS, "output_dir": Spec("choice", choices=()), **ALLOW_MISSING},
}
