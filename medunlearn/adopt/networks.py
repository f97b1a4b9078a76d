"""A MONAI network + its weights -> a medunlearn Classifier, with the key map back to the original names.

The Classifier reuses the network's own submodules as ordered feature blocks (zoo.monai_net) and its final
Linear as `head`, so every unlearner and merge method (CF-k, EU-k, `params: last-N`, the prefix cache) works
on it. `key_map` = {medunlearn state-dict key: original key} (original keys as inside the unwrapped
model.pt, without the `module.` prefix; `container.prefix` is prepended in the file). A single-logit
sigmoid head becomes two logits [0, z], so softmax gives [1 - σ(z), σ(z)] exactly; a multi-label head
(sigmoid over several outputs) is refused.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medunlearn.adopt.resolver import Component
from medunlearn.errors import CheckpointError
from medunlearn.models.checkpoint import MAX_PARAMETERS, load_state_into
from medunlearn.models.intensity import Intensity
from medunlearn.models.zoo import Classifier, _split_monai, build_monai_network, create_model

FINAL_LINEAR = {"DenseNet": "class_layers.out", "resnet": "fc", "SEResNe": "last_linear", "EfficientNetBN": "_fc"}
# MONAI's own defaults where a bundle leaves an argument out (resnet and SENet default to 3D / 3 channels)
IO_NAMES = {"DenseNet": ("spatial_dims", "in_channels", "out_channels"),
            "resnet": ("spatial_dims", "n_input_channels", "num_classes"),
            "SEResNe": ("spatial_dims", "in_channels", "num_classes"),
            "EfficientNetBN": ("spatial_dims", "in_channels", "num_classes")}
DEFAULTS = {"resnet": {"spatial_dims": 3, "n_input_channels": 3, "num_classes": 400},
            "SEResNe": {"in_channels": 3, "num_classes": 1000},
            "EfficientNetBN": {"spatial_dims": 2, "in_channels": 3, "num_classes": 1000},
            "DenseNet": {}}


def family(network: str) -> str:
    for fam in FINAL_LINEAR:
        if network.startswith(fam):
            return fam
    raise CheckpointError(f"Expected a MONAI network medunlearn can split into blocks + a linear head, but got "
                          f"{network!r}; refusing to adopt it.")


def io_of(comp: Component) -> tuple[int, int, int]:
    """(spatial_dims, in_channels, outputs) of a resolved network, MONAI defaults filled in."""
    fam = family(comp.name)
    args = {**DEFAULTS[fam], **comp.args}
    names = IO_NAMES[fam]
    missing = [n for n in names if n not in args]
    if missing:
        raise CheckpointError(f"Expected network_def {comp.name} to give {missing}, but it does not.")
    return int(args[names[0]]), int(args[names[1]]), int(args[names[2]])


def full_args(comp: Component) -> dict[str, Any]:
    return {**DEFAULTS[family(comp.name)], **comp.args}


def count_parameters(comp: Component) -> int:
    """Parameters of the network on the meta device (shapes only): checked before any allocation."""
    with torch.device("meta"):
        net = build_monai_network(comp.name, full_args(comp))
    return sum(t.numel() for t in net.state_dict().values())


def check_size(comp: Component) -> None:
    n = count_parameters(comp)
    if n > MAX_PARAMETERS:
        raise CheckpointError(f"Expected at most {MAX_PARAMETERS:,} parameters in network_def {comp.name}, but it "
                              f"asks for {n:,}; refusing to adopt it.")


def build_reference(comp: Component, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The bundle's own MONAI network with its weights (strict), in eval mode: the fidelity reference."""
    check_size(comp)
    net = build_monai_network(comp.name, full_args(comp))
    load_state_into(net, state, source="bundle model.pt")
    return net.eval()


def adopt_network(comp: Component, state: Mapping[str, torch.Tensor], head_kind: str, image_size: int,
                  intensity: dict[str, Any]) -> tuple[Classifier, dict[str, str]]:
    """(Classifier in eval mode with the bundle's weights, key map medunlearn key -> original key)."""
    dims, chans, outputs = io_of(comp)
    if dims != 2:
        raise CheckpointError(f"Expected a 2D network (spatial_dims 2), but {comp.name} has {dims}; medunlearn "
                              "adopts 2D classifiers only.")
    if head_kind == "sigmoid1" and outputs != 1:
        raise CheckpointError(f"Expected one output for a sigmoid head, but {comp.name} has {outputs} (multi-label); "
                              "refusing to adopt it.")
    net = build_reference(comp, state)
    mods, dim = _split_monai(comp.name, net)
    final = net.get_submodule(FINAL_LINEAR[family(comp.name)])
    if not isinstance(final, nn.Linear):
        raise CheckpointError(f"Expected {comp.name}'s final layer to be Linear, but got {type(final).__name__}.")
    classes = 2 if head_kind == "sigmoid1" else outputs
    head = nn.Linear(dim, classes)
    with torch.no_grad():
        if head_kind == "sigmoid1":
            head.weight.zero_()
            head.bias.zero_()
            head.weight[1].copy_(final.weight[0])
            head.bias[1].copy_(final.bias[0])
        else:
            head.weight.copy_(final.weight)
            head.bias.copy_(final.bias)
    features = nn.Sequential(OrderedDict([("normalize", Intensity(intensity)), *mods.items()]))
    arch_args = {k: v for k, v in comp.args.items() if k != "pretrained"}
    rebuilt = create_model("monai_net", classes, chans, int(image_size), network=comp.name,
                           net_args={**DEFAULTS[family(comp.name)], **arch_args}, intensity=intensity)
    model = Classifier(features, head, rebuilt.arch)
    want = set(rebuilt.state_dict())
    if set(model.state_dict()) != want:
        raise CheckpointError(f"Expected the adopted {comp.name} to rebuild with the same keys, but they differ.")
    return model.eval(), key_map(model, net, FINAL_LINEAR[family(comp.name)])


def key_map(model: Classifier, net: nn.Module, final: str) -> dict[str, str]:
    """medunlearn key -> original key, by tensor identity (the Classifier shares the net's submodules)."""
    orig = {id(t): k for k, t in net.state_dict(keep_vars=True).items()}
    out: dict[str, str] = {}
    for k, t in model.state_dict(keep_vars=True).items():
        if k.startswith("head."):
            out[k] = f"{final}.{k[len('head.'):]}"
        elif id(t) in orig:
            out[k] = orig[id(t)]
        else:
            raise CheckpointError(f"Expected every adopted weight to come from the bundle, but {k} does not.")
    return out


def read_model_pt(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, container) from a model.pt read with weights_only=True; a pickle with code is refused.

    container = {"wrapper": None | "model" | "state_dict", "prefix": "" | "module."}."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError etc.: the file needs code to load
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(f"Expected {path.name} to be a tensor state dict loadable with weights_only=True, "
                              f"but it was refused ({first}); nothing in it was run.") from exc
    wrapper = None
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping) and not torch.is_tensor(obj.get(key)):
                obj, wrapper = obj[key], key
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) and torch.is_tensor(v)
                                                          for k, v in obj.items()):
        raise CheckpointError(f"Expected {path.name} to hold a mapping of names to tensors, but got "
                              f"{type(obj).__name__}.")
    prefix = "module." if all(k.startswith("module.") for k in obj) else ""
    state = {k[len(prefix):]: v for k, v in obj.items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"Expected finite weights in {path.name}, but {bad[0]} holds NaN or inf.")
    return state, {"wrapper": wrapper, "prefix": prefix}
