"""Registered classifiers (timm style): `@register_model(name)` + one `create_model` factory.

Every model is a `Classifier`: `features` maps [0, 1] pixels (B, C, H, W) — or voxels (B, C, D, H, W) when
built with spatial_dims=3 — to a (B, F) vector, normalising inside as its first op (so pixel-space attacks
such as PSG's ε-ball work in [0, 1] units), and `head` is an `nn.Linear(F, K)`. Every builder takes
`spatial_dims` (2 or 3). Add a model by writing one builder below; the contract tests pick it up.
"""
from __future__ import annotations

import inspect
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medunlearn.errors import ConfigError
from medunlearn.registry import Registry, did_you_mean

# A builder returns (ordered feature modules WITHOUT normalisation, feature dim F).
Builder = Callable[..., tuple["OrderedDict[str, nn.Module]", int]]
MODELS: Registry[Builder] = Registry("model")
_SUMMARIES: dict[str, str] = {}
SPATIAL_DIMS = (2, 3)
# What `train` builds when no model is named: the 2D default, and a small 3D net that trains on CPU.
DEFAULT_MODELS = {2: "allcnn", 3: "densenet_small"}
_RESERVED = ("num_classes", "in_channels", "image_size", "spatial_dims")


def register_model(name: str, summary: str = "") -> Callable[[Builder], Builder]:
    """Register a builder `fn(num_classes, in_channels, image_size, spatial_dims, **kwargs) -> (modules, F)`."""

    def deco(fn: Builder) -> Builder:
        _SUMMARIES[name] = summary or (fn.__doc__ or "").strip().splitlines()[0]
        return MODELS.register(name)(fn)

    return deco


class Normalize(nn.Module):
    """(x - mean) / std with fixed buffers; keeps the model's input in [0, 1] pixel units."""

    def __init__(self, mean: float = 0.5, std: float = 0.25) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch types a buffer as Tensor | Module; declaring it on the class would break TorchScript (postponed
        # annotations are strings it cannot resolve)
        return (x - self.mean) / self.std  # type: ignore[operator]


class Classifier(nn.Module):
    """features: (B, C, *spatial) in [0, 1] -> (B, F); head: (B, F) -> (B, K) logits."""

    __jit_unused_properties__ = ["spatial_dims"]  # a Python-side record: TorchScript must not compile it

    def __init__(self, features: nn.Sequential, head: nn.Linear, arch: dict[str, Any]) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.arch = arch  # {"name", "kwargs"}: enough for create_model to rebuild this exact net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def num_classes(self) -> int:
        return int(self.head.out_features)

    @property
    def spatial_dims(self) -> int:
        return int(self.arch.get("kwargs", {}).get("spatial_dims", 2))

    def block_names(self) -> list[str]:
        """Parameter-holding feature blocks, input -> output, then "head"."""
        names = [n for n, m in self.features.named_children() if any(True for _ in m.parameters())]
        return names + ["head"]


def _check_kwargs(name: str, fn: Builder, kwargs: dict[str, Any]) -> None:
    allowed = [p for p in inspect.signature(fn).parameters if p not in _RESERVED]
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(
                f"Expected model options for {name!r} in {allowed + ['mean', 'std', 'intensity']}, but got {key!r}."
                f"{did_you_mean(key, allowed)}"
            )


def create_model(name: str, num_classes: int, in_channels: int = 1, image_size: int = 64, spatial_dims: int = 2,
                 **kwargs: Any) -> Classifier:
    """Build a registered model for 2D images or (spatial_dims=3) volumes.

    kwargs: builder options plus `mean`/`std` of the input normalisation."""
    fn = MODELS.get(name)
    for label, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"Expected {label} to be a positive integer, but got {value!r}.")
    if num_classes < 2:
        raise ConfigError(f"Expected at least 2 classes, but got {num_classes}.")
    if spatial_dims not in SPATIAL_DIMS or isinstance(spatial_dims, bool):
        raise ConfigError(f"Expected spatial_dims 2 (images) or 3 (volumes), but got {spatial_dims!r}.")
    opts = dict(kwargs)
    mean, std = float(opts.pop("mean", 0.5)), float(opts.pop("std", 0.25))
    intensity = opts.pop("intensity", None)
    if std <= 0:
        raise ConfigError(f"Expected a positive normalisation std, but got {std}.")
    _check_kwargs(name, fn, opts)
    modules, dim = fn(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                      spatial_dims=spatial_dims, **opts)
    if intensity is not None:  # an adopted bundle's own intensity step (models.intensity)
        from medunlearn.models.intensity import Intensity

        first: nn.Module = Intensity(intensity)
    else:
        first = Normalize(mean, std)
    features = nn.Sequential(OrderedDict([("normalize", first), *modules.items()]))
    # spatial_dims is recorded only for volumes, so 2D architecture records stay as they always were
    dims = {"spatial_dims": spatial_dims} if spatial_dims != 2 else {}
    arch = {"name": name, "kwargs": {"num_classes": num_classes, "in_channels": in_channels,
                                     "image_size": image_size, **dims, **kwargs}}
    return Classifier(features, nn.Linear(dim, num_classes), arch)


def model_from_arch(arch: dict[str, Any]) -> Classifier:
    """Rebuild a model from its `.arch` record ({"name", "kwargs"}) as stored in checkpoint meta."""
    if not isinstance(arch, dict) or "name" not in arch or not isinstance(arch.get("kwargs", {}), dict):
        raise ConfigError(f"Expected an architecture record {{'name': ..., 'kwargs': {{...}}}}, but got {arch!r}.")
    kw = dict(arch.get("kwargs", {}))
    try:
        return create_model(arch["name"], kw.pop("num_classes"), kw.pop("in_channels", 1), kw.pop("image_size", 64),
                            kw.pop("spatial_dims", 2), **kw)
    except KeyError as exc:
        raise ConfigError(f"Expected architecture kwargs to include {exc}, but got {sorted(kw)}.") from exc


def parameter_subset(model: nn.Module, which: str = "all") -> list[tuple[str, nn.Parameter]]:
    """Parameters selected by `which`: "all", "head", or "last-N" (the last N blocks, head counts as 1; these
    need a Classifier's blocks)."""
    params = list(model.named_parameters())
    if which == "all":
        return params
    if not isinstance(model, Classifier):
        raise ConfigError(f"Expected a model split into blocks and a head for params {which!r}, but got "
                          f"{type(model).__name__}; use params all.")
    blocks = model.block_names()
    if which == "head":
        chosen = ["head"]
    else:
        match = re.fullmatch(r"last-(\d+)", str(which))
        if not match or not 1 <= int(match.group(1)) <= len(blocks):
            choices = ["all", "head"] + [f"last-{n}" for n in range(1, len(blocks) + 1)]
            raise ConfigError(
                f'Expected a parameter subset "all", "head" or "last-N" with 1 <= N <= {len(blocks)}, '
                f"but got {which!r}.{did_you_mean(str(which), choices)}"
            )
        chosen = blocks[-int(match.group(1)):]
    prefixes = tuple("head." if b == "head" else f"features.{b}." for b in chosen)
    return [(n, p) for n, p in params if n.startswith(prefixes)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_model(spatial_dims: int) -> str:
    """The registry name `train` uses when no model is given, for 2D images or 3D volumes."""
    if spatial_dims not in DEFAULT_MODELS:
        raise ConfigError(f"Expected spatial_dims 2 (images) or 3 (volumes), but got {spatial_dims!r}.")
    return DEFAULT_MODELS[spatial_dims]


def list_models() -> list[tuple[str, str, int]]:
    """(name, one-line description, parameter count at 1 channel / 64 px / 3 classes) for every model."""
    return [(n, _SUMMARIES[n], n_params(create_model(n, 3, 1, 64))) for n in MODELS.names()]


def _conv_bn(cin: int, cout: int, stride: int = 1, dims: int = 2) -> nn.Sequential:
    # no conv bias: BatchNorm's shift makes it redundant
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    return nn.Sequential(conv(cin, cout, 3, stride, 1, bias=False), bn(cout), nn.ReLU(inplace=True))


def _pool_flatten(dims: int = 2) -> list[tuple[str, nn.Module]]:
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    return [("pool", pool), ("flatten", nn.Flatten(1))]


@register_model("allcnn", "AllCNN-style: five 3x3 conv+BN+ReLU (w, w/s2, 2w, 2w/s2, 2w), global avg pool")
def allcnn(num_classes: int, in_channels: int, image_size: int, spatial_dims: int = 2,
           width: int = 32) -> tuple[OrderedDict, int]:
    """Compact AllCNN with BatchNorm; width=32 gives 32, 32/s2, 64, 64/s2, 64 channels."""
    w = int(width)
    if w < 1:
        raise ConfigError(f"Expected allcnn width >= 1, but got {width!r}.")
    plan = [(w, 1), (w, 2), (2 * w, 1), (2 * w, 2), (2 * w, 1)]
    mods, cin = [], in_channels
    for i, (cout, stride) in enumerate(plan, start=1):
        mods.append((f"conv{i}", _conv_bn(cin, cout, stride, spatial_dims)))
        cin = cout
    return OrderedDict(mods + _pool_flatten(spatial_dims)), cin


@register_model("small_cnn", "Small fast CNN: three 3x3 conv+BN+ReLU (w, 2w/s2, 2w/s2), global avg pool")
def small_cnn(num_classes: int, in_channels: int, image_size: int, spatial_dims: int = 2,
              width: int = 16) -> tuple[OrderedDict, int]:
    """Three conv blocks; for tests and quick experiments."""
    w = int(width)
    if w < 1:
        raise ConfigError(f"Expected small_cnn width >= 1, but got {width!r}.")
    d = spatial_dims
    mods = [("conv1", _conv_bn(in_channels, w, 1, d)), ("conv2", _conv_bn(w, 2 * w, 2, d)),
            ("conv3", _conv_bn(2 * w, 2 * w, 2, d))]
    return OrderedDict(mods + _pool_flatten(d)), 2 * w


def _in_features(net: nn.Module, name: str) -> int:
    """Input width of the Linear layer `name` (a dotted path) of a MONAI network."""
    layer = net.get_submodule(name)
    if not isinstance(layer, nn.Linear):
        raise ConfigError(f"Expected {name} of {type(net).__name__} to be a Linear layer, but got "
                          f"{type(layer).__name__}.")
    return int(layer.in_features)


def _densenet_blocks(net: nn.Module) -> tuple[OrderedDict, int]:
    mods = list(net.get_submodule("features").named_children())
    # class_layers = relu, pool, flatten, out(Linear): keep all but the Linear
    mods += [(n, m) for n, m in net.get_submodule("class_layers").named_children() if n != "out"]
    return OrderedDict(mods), _in_features(net, "class_layers.out")


@register_model("densenet121", "MONAI DenseNet121 (2D or 3D), split into feature blocks + linear head")
def densenet121(num_classes: int, in_channels: int, image_size: int, spatial_dims: int = 2, init_features: int = 64,
                growth_rate: int = 32, dropout_prob: float = 0.0) -> tuple[OrderedDict, int]:
    """monai.networks.nets.DenseNet121; its final Linear becomes the head."""
    from monai.networks.nets import DenseNet121

    return _densenet_blocks(DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                                        init_features=init_features, growth_rate=growth_rate,
                                        dropout_prob=dropout_prob))


@register_model("densenet_small", "MONAI DenseNet, 3 dense blocks (2, 4, 4), growth 8: small enough for 3D on CPU")
def densenet_small(num_classes: int, in_channels: int, image_size: int, spatial_dims: int = 2,
                   init_features: int = 16, growth_rate: int = 8, dropout_prob: float = 0.0) -> tuple[OrderedDict, int]:
    """monai.networks.nets.DenseNet with block_config (2, 4, 4) and bn_size 2 (the default 3D model)."""
    from monai.networks.nets import DenseNet

    return _densenet_blocks(DenseNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                                     init_features=init_features, growth_rate=growth_rate, block_config=(2, 4, 4),
                                     bn_size=2, dropout_prob=dropout_prob))


def _monai_resnet(depth: int, num_classes: int, in_channels: int, spatial_dims: int, conv1_t_stride: int,
                  conv1_t_size: int, no_max_pool: bool, widen_factor: float) -> tuple[OrderedDict, int]:
    from monai.networks.nets import resnet10, resnet18

    make = {10: resnet10, 18: resnet18}[depth]
    net = make(spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes,
               conv1_t_stride=conv1_t_stride, conv1_t_size=conv1_t_size, no_max_pool=no_max_pool,
               widen_factor=widen_factor)
    names = ["conv1", "bn1", "act"] + ([] if no_max_pool else ["maxpool"])
    names += ["layer1", "layer2", "layer3", "layer4", "avgpool"]
    mods = [(n, getattr(net, n)) for n in names] + [("flatten", nn.Flatten(1))]
    return OrderedDict(mods), _in_features(net, "fc")


@register_model("resnet18", "MONAI ResNet-18 (2D or 3D), split into feature blocks + linear head")
def resnet18(num_classes: int, in_channels: int, image_size: int, spatial_dims: int = 2, conv1_t_stride: int = 2,
             conv1_t_size: int = 7, no_max_pool: bool = False, widen_factor: float = 1.0) -> tuple[OrderedDict, int]:
    """monai.networks.nets.resnet18; its fc becomes the head."""
    return _monai_resnet(18, num_classes, in_channels, spatial_dims, conv1_t_stride, conv1_t_size, no_max_pool,
                         widen_factor)


@register_model("resnet10", "MONAI ResNet-10 (2D or 3D), split into feature blocks + linear head")
def resnet10(num_classes: int, in_channels: int, image_size: int, spatial_dims: int = 2, conv1_t_stride: int = 2,
             conv1_t_size: int = 7, no_max_pool: bool = False, widen_factor: float = 1.0) -> tuple[OrderedDict, int]:
    """monai.networks.nets.resnet10; its fc becomes the head. widen_factor=0.25 suits 3D on CPU."""
    return _monai_resnet(10, num_classes, in_channels, spatial_dims, conv1_t_stride, conv1_t_size, no_max_pool,
                         widen_factor)


def _split_monai(network: str, net: nn.Module) -> tuple[OrderedDict, int]:
    """(ordered feature blocks, F) of an allow-listed MONAI classifier; its final Linear is dropped."""
    if network.startswith("DenseNet"):
        return _densenet_blocks(net)
    if network.startswith("resnet"):
        if net.fc is None:
            raise ConfigError(f"Expected {network} with its fc layer (feed_forward=True), but it has none.")
        names = ["conv1", "bn1", "act"] + ([] if net.no_max_pool else ["maxpool"])
        mods = [(n, getattr(net, n)) for n in names + ["layer1", "layer2", "layer3", "layer4", "avgpool"]]
        return OrderedDict(mods + [("flatten", nn.Flatten(1))]), _in_features(net, "fc")
    if network.startswith("SEResNe"):
        mods = [(n, getattr(net, n)) for n in ("layer0", "layer1", "layer2", "layer3", "layer4", "adaptive_avg_pool")]
        if net.dropout is not None:
            mods.append(("dropout", net.dropout))
        return OrderedDict(mods + [("flatten", nn.Flatten(1))]), _in_features(net, "last_linear")
    if network == "EfficientNetBN":
        mods = [("stem_pad", net._conv_stem_padding), ("stem", net._conv_stem), ("bn0", net._bn0),
                ("act0", net._swish), ("blocks", net._blocks), ("head_pad", net._conv_head_padding),
                ("conv_head", net._conv_head), ("bn1", net._bn1), ("act1", net._swish),
                ("pool", net._avg_pooling), ("flatten", nn.Flatten(1)), ("dropout", net._dropout)]
        return OrderedDict(mods), _in_features(net, "_fc")
    raise ConfigError(f"Expected a MONAI network medunlearn can split into blocks + linear head, but got {network!r}.")


def build_monai_network(network: str, net_args: dict[str, Any]) -> nn.Module:
    """The MONAI network `network`(**net_args); the caller has checked both against adopt.argspec."""
    import monai.networks.nets as nets

    from medunlearn.adopt.argspec import NETWORKS  # the allow-list (data only)

    if network not in NETWORKS:
        raise ConfigError(f"Expected a MONAI network in {sorted(NETWORKS)}, but got {network!r}."
                          f"{did_you_mean(network, list(NETWORKS))}")
    unknown = sorted(set(net_args) - set(NETWORKS[network]))
    if unknown:
        raise ConfigError(f"Expected {network} arguments among {sorted(NETWORKS[network])}, but got {unknown}.")
    args = {**net_args, **({"pretrained": False} if "pretrained" in NETWORKS[network] else {})}
    if network == "EfficientNetBN":
        args.setdefault("pretrained", False)
    return getattr(nets, network)(**args)


@register_model("monai_net", "An allow-listed MONAI network (adopted: DenseNet, ResNet, SEResNet, EfficientNetBN)")
def monai_net(num_classes: int, in_channels: int, image_size: int, spatial_dims: int = 2,
              network: str = "DenseNet121", net_args: dict | None = None) -> tuple[OrderedDict, int]:
    """A MONAI network built from its bundle arguments, split into feature blocks; its final Linear is the head
    (rebuilt by create_model with num_classes outputs: 2 for a single-logit sigmoid bundle)."""
    args = dict(net_args or {})
    names = MONAI_ARG_NAMES.get(network.rstrip("0123456789") if network.startswith("resnet") else network,
                                ("spatial_dims", "in_channels", "num_classes"))
    for key, value in zip(names, (spatial_dims, in_channels, num_classes)):
        args.setdefault(key, value)
    if network == "EfficientNetBN":
        args.setdefault("model_name", "efficientnet-b0")
    return _split_monai(network, build_monai_network(network, args))


# (spatial dims, input channels, classes) argument names per MONAI family
MONAI_ARG_NAMES = {**{d: ("spatial_dims", "in_channels", "out_channels")
                      for d in ("DenseNet", "DenseNet121", "DenseNet169", "DenseNet201")},
                   "resnet": ("spatial_dims", "n_input_channels", "num_classes")}
