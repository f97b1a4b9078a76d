"""Tiny MONAI bundles for tests (random weights, no network access). Importable by any test:

    from tests.adopt.factory import template_bundle, endoscopic_bundle, hostile_bundle, synthetic_cohort, rgb_cohort

- template_bundle(dir, ...): classification_template layout (configs/inference.yaml + metadata.json +
  models/model.pt): DenseNet121 (init_features 4, growth 4), 1 channel, LoadImaged(PydicomReader) ->
  EnsureChannelFirstd -> ScaleIntensityd, no resize, 3 classes (the synthetic cohort's), softmax.
  `wrapper` ("model" / "state_dict") and `ddp` (module. prefix) wrap model.pt as real bundles sometimes do;
  `sigmoid=True` gives a single-logit sigmoid head (2 classes).
- endoscopic_bundle(dir, ...): endoscopic_inbody_classification layout (inference.json): SEResNet50
  (layers 1,1,1,1, inplanes 8), RGB PNG, EnsureChannelFirstd(channel_dim -1), Resized 32, CastToTyped,
  NormalizeIntensityd(nonzero, channel_wise), EnsureTyped; 2 classes.
- hostile_bundle(dir, kind): a template bundle with one hostile edit; kinds in HOSTILE. "imports" writes
  <dir>/PWNED if anything ever ran it (assert it does not exist).
- synthetic_cohort(dir): the synthetic DICOM cohort (32 px) indexed -> (DataFrame with paths, cohort.csv path).
- rgb_cohort(dir): RGB PNGs as a cohort DataFrame (path, label, image_id, patient, format="png").
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

CLASSES = ["normal", "cyst", "mass"]
HOSTILE = ("os_system", "import_expr", "open_expr", "scripts_target", "imports", "pickle", "reader", "huge")


def _metadata(names: list[str], channels: int) -> dict[str, Any]:
    return {"version": "0.1.0", "name": "tiny test bundle", "network_data_format": {
        "inputs": {"image": {"type": "image", "num_channels": channels, "spatial_shape": [32, 32]}},
        "outputs": {"pred": {"type": "probabilities", "num_channels": len(names),
                             "channel_def": {str(i): n for i, n in enumerate(names)}}}}}


def _save_weights(net: torch.nn.Module, path: Path, wrapper: str | None, ddp: bool) -> None:
    state = {("module." if ddp else "") + k: v for k, v in net.state_dict().items()}
    torch.save({wrapper: state} if wrapper else state, path)


def _randomise_bn(net: torch.nn.Module, x: torch.Tensor) -> None:
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()


def template_config(sigmoid: bool = False) -> dict[str, Any]:
    out = 1 if sigmoid else 3
    return {
        "imports": ["$import os", "$import json"],
        "image": "$monai.utils.CommonKeys.IMAGE", "pred": "$monai.utils.CommonKeys.PRED",
        "num_classes": out, "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1,
                        "out_channels": "@num_classes", "init_features": 4, "growth_rate": 4},
        "network": "$@network_def.to(@device)",
        "transforms": [{"_target_": "LoadImaged", "keys": "@image", "reader": "PydicomReader"},
                       {"_target_": "EnsureChannelFirstd", "keys": "@image"},
                       {"_target_": "ScaleIntensityd", "keys": "@image"}],
        "preprocessing": {"_target_": "Compose", "transforms": "$@transforms"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "@pred", **({"sigmoid": True} if sigmoid else {"softmax": True})},
            {"_target_": "AsDiscreted", "keys": "@pred", "argmax": True},
            {"_target_": "ToTensord", "keys": "@pred", "device": "@device"}]},
        "run": ["$@evaluator.run()"],
    }


def template_bundle(root: Path, seed: int = 0, wrapper: str | None = None, ddp: bool = False,
                    sigmoid: bool = False, config: dict | None = None) -> Path:
    from monai.networks.nets import DenseNet121

    root = Path(root)
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    torch.manual_seed(seed)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=1 if sigmoid else 3, init_features=4,
                      growth_rate=4)
    _randomise_bn(net, torch.rand(4, 1, 32, 32))
    _save_weights(net, root / "models" / "model.pt", wrapper, ddp)
    cfg = config if config is not None else template_config(sigmoid)
    (root / "configs" / "inference.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    names = ["absent", "present"] if sigmoid else CLASSES
    (root / "configs" / "metadata.json").write_text(json.dumps(_metadata(names, 1)))
    return root


def endoscopic_bundle(root: Path, seed: int = 0) -> Path:
    from monai.networks.nets import SEResNet50

    root = Path(root)
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    torch.manual_seed(seed)
    args = {"spatial_dims": 2, "in_channels": 3, "num_classes": 2, "layers": [1, 1, 1, 1], "inplanes": 8}
    net = SEResNet50(**args)
    _randomise_bn(net, torch.randn(4, 3, 32, 32))
    _save_weights(net, root / "models" / "model.pt", None, False)
    key = "@image_key"
    cfg = {"imports": ["$import numpy"], "image_key": "image", "network_def": {"_target_": "SEResNet50", **args},
           "preprocessing": {"_target_": "Compose", "transforms": [
               {"_target_": "LoadImaged", "keys": key, "image_only": False},
               {"_target_": "EnsureChannelFirstd", "keys": key, "channel_dim": -1},
               {"_target_": "Resized", "keys": key, "spatial_size": [32, 32], "mode": "bilinear"},
               {"_target_": "CastToTyped", "dtype": "$torch.float32", "keys": key},
               {"_target_": "NormalizeIntensityd", "nonzero": True, "channel_wise": True, "keys": key},
               {"_target_": "EnsureTyped", "keys": key}]},
           "postprocessing": {"_target_": "Compose", "transforms": [
               {"_target_": "AsDiscreted", "argmax": True, "to_onehot": 2, "keys": ["pred"]},
               {"_target_": "SaveClassificationd", "keys": "pred", "meta_keys": "$@image_key + '_meta_dict'",
                "output_dir": "@output_dir"}]}}
    (root / "configs" / "inference.json").write_text(json.dumps(cfg, indent=1))
    (root / "configs" / "metadata.json").write_text(json.dumps(_metadata(["outside", "inside"], 3)))
    return root


class _Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def hostile_bundle(root: Path, kind: str) -> Path:
    """A template bundle with one hostile edit (see HOSTILE)."""
    root = Path(root)
    cfg = template_config()
    marker = root / "PWNED"
    if kind == "os_system":
        cfg["network_def"] = {"_target_": "os.system", "command": f"touch {marker}"}
    elif kind == "import_expr":
        cfg["network_def"]["in_channels"] = f"$__import__('os').system('touch {marker}')"
    elif kind == "open_expr":
        cfg["transforms"][0]["keys"] = f"$open('{marker}', 'w')"
    elif kind == "scripts_target":
        cfg["network_def"] = {"_target_": "scripts.net.Net", "spatial_dims": 2}
    elif kind == "imports":
        cfg["imports"] = [f"$open('{marker}', 'w').write('ran')", "$import scripts"]
    elif kind == "reader":
        cfg["transforms"][0] = {"_target_": "LoadImaged", "keys": "@image", "reader": "os.system"}
    elif kind == "huge":
        cfg["network_def"]["out_channels"] = 10 ** 12
    elif kind != "pickle":
        raise ValueError(kind)
    template_bundle(root, config=cfg)
    if kind == "imports":
        (root / "scripts").mkdir()
        (root / "scripts" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    if kind == "pickle":
        (root / "models" / "model.pt").write_bytes(pickle.dumps(_Evil()))
    return root


def synthetic_cohort(root: Path, n_patients: int = 6) -> tuple[pd.DataFrame, Path]:
    from medunlearn.data.cohort import index_archive, write_cohort
    from medunlearn.data.synthetic import synthesize_cohort

    root = Path(root)
    synthesize_cohort(root / "images", n_patients=n_patients, seed=0, image_size=32, images_per_patient=(2, 3))
    df, _ = index_archive(root / "images", root / "images" / "labels.csv", salt="test-salt-123", workers=1)
    csv = write_cohort(df, root / "cohort.csv", archive_root=root / "images")
    return df, Path(csv)


def rgb_cohort(root: Path, n: int = 6, seed: int = 0) -> pd.DataFrame:
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        arr = g.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        arr[:4] = 0  # black border: NormalizeIntensity(nonzero) must skip it
        p = root / f"frame{i}.png"
        Image.fromarray(arr).save(p)
        rows.append({"path": str(p), "label": ["outside", "inside"][i % 2], "image_id": f"f{i}",
                     "patient": f"v{i // 2}", "format": "png"})
    return pd.DataFrame(rows)
