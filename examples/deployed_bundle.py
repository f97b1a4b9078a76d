"""A deployed model that medunlearn did not train: plain MONAI + torch code, in the MONAI model zoo's layouts.

This script stands in for a hospital team's own training code, so it deliberately imports nothing from
medunlearn (tests/examples/test_deployed_bundle.py runs it with medunlearn blocked). It reads DICOM headers with
pydicom and pixels with MONAI's own LoadImaged, never with medunlearn's loaders. `make demo` starts here:

    medunlearn cohort synth demo_site/archive --patients 120      # a SYNTHETIC archive with a labels.csv
    python examples/deployed_bundle.py demo_site/archive demo_site/bundle

- `train_densenet_bundle(archive, out)`: a DenseNet121 (2D, 1 channel, no Resize) trained on a DICOM archive
  with a labels.csv (`path,label` columns, paths relative to the archive, e.g. `medunlearn cohort synth`),
  written in the `classification_template` layout: configs/inference.yaml, configs/metadata.json,
  models/model.pt (a state dict) and datalist.json (Decathlon style: training / validation / test, split by
  patient) recording which images trained it.
- `write_seresnet_bundle(out)`: an RGB SEResNet50 bundle with random weights in the
  `endoscopic_inbody_classification` layout (EnsureChannelFirstd channel_dim -1, Resized, CastToTyped,
  NormalizeIntensityd nonzero / channel_wise); `write_rgb_archive` writes RGB DICOMs for it.

Both bundles run with `python -m monai.bundle run --config_file configs/inference.yaml` (or .json).
"""
from __future__ import annotations

import csv
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

DENSENET_ARGS = {"init_features": 16, "growth_rate": 8}  # small enough to train in well under a minute on 2 cores
SPLIT = (0.6, 0.2, 0.2)  # patients in training / validation / test


def _read_labels(archive: Path) -> list[dict[str, str]]:
    with open(archive / "labels.csv", newline="", encoding="utf-8") as fh:
        return [{"path": r["path"], "label": r["label"]} for r in csv.DictReader(fh)]


def _header(path: Path) -> dict[str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {"patient": str(ds.get("PatientID", "")), "device": str(ds.get("ManufacturerModelName", ""))}


def make_datalist(archive: str | Path, seed: int = 0, exclude_device: str | None = None) -> dict[str, Any]:
    """Decathlon-style datalist {"labels", "training", "validation", "test"}, split by patient (seeded).

    Entries are {"image": path relative to the archive, "label": class index}; class indices follow the sorted
    label names. `exclude_device` drops that scanner's images (ManufacturerModelName) from every split, as a
    team retraining without it would.
    """
    archive = Path(archive)
    rows = _read_labels(archive)
    names = sorted({r["label"] for r in rows})
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        head = _header(archive / r["path"])
        if exclude_device is not None and head["device"].lower() == exclude_device.lower():
            continue
        by_patient[head["patient"]].append({"image": r["path"], "label": names.index(r["label"])})
    patients = sorted(by_patient)
    random.Random(seed).shuffle(patients)
    n_train, n_val = round(SPLIT[0] * len(patients)), round(SPLIT[1] * len(patients))
    groups = {"training": patients[:n_train], "validation": patients[n_train:n_train + n_val],
              "test": patients[n_train + n_val:]}
    out: dict[str, Any] = {"name": "synthetic classification", "labels": {str(i): n for i, n in enumerate(names)},
                           "split": f"by patient, seed {seed}"}
    for key, group in groups.items():
        out[key] = [e for p in group for e in by_patient[p]]
    return out


def _transforms():
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

    return Compose([LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), ScaleIntensityd(keys="image")])


def _loader(archive: Path, entries: list[dict[str, Any]], batch_size: int, shuffle: bool, seed: int):
    from monai.data import CacheDataset, DataLoader

    data = [{"image": str(archive / e["image"]), "label": int(e["label"])} for e in entries]
    ds = CacheDataset(data, transform=_transforms(), progress=False, num_workers=0)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=0, generator=gen)


def _accuracy(net: torch.nn.Module, loader) -> float:
    net.eval()
    right = total = 0
    with torch.no_grad():
        for batch in loader:
            pred = net(batch["image"].as_tensor()).argmax(1)
            right += int((pred == batch["label"]).sum())
            total += len(pred)
    return 100.0 * right / max(total, 1)


def train_network(archive: str | Path, datalist: dict[str, Any], epochs: int = 8, seed: int = 0,
                  batch_size: int = 16, lr: float = 1e-3) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The team's recipe: DenseNet121, Adam, cross-entropy; keeps the epoch with the best validation accuracy."""
    from monai.networks.nets import DenseNet121

    archive = Path(archive)
    torch.manual_seed(seed)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=len(datalist["labels"]), **DENSENET_ARGS)
    train = _loader(archive, datalist["training"], batch_size, True, seed)
    val = _loader(archive, datalist["validation"], 64, False, seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    best, best_state, history, start = -1.0, None, [], time.perf_counter()
    for epoch in range(epochs):
        net.train()
        for batch in train:
            opt.zero_grad()
            loss = loss_fn(net(batch["image"].as_tensor()), batch["label"])
            loss.backward()
            opt.step()
        acc = _accuracy(net, val)
        history.append({"epoch": epoch + 1, "val_accuracy": round(acc, 2)})
        if acc > best:
            best, best_state = acc, {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    info = {"epochs": epochs, "best_val_accuracy": round(best, 2), "history": history,
            "wall_time_s": round(time.perf_counter() - start, 2), "seed": seed}
    return net.eval(), info


def densenet_inference_yaml(num_classes: int) -> str:
    """configs/inference.yaml in the classification_template's style (MONAI conventions, no Resize)."""
    args = "".join(f"  {k}: {v}\n" for k, v in DENSENET_ARGS.items())
    return f"""# Inference over the images of a datalist; writes eval/predictions.csv (file, one probability per class).
imports:
- $import os
- $import torch
- $import monai

image: $monai.utils.CommonKeys.IMAGE
label: $monai.utils.CommonKeys.LABEL
pred: $monai.utils.CommonKeys.PRED

batch_size: 8
num_workers: 0
num_classes: {num_classes}
device: $torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')

bundle_root: .
ckpt_path: $@bundle_root + '/models/model.pt'
dataset_dir: $@bundle_root + '/data'
output_dir: $@bundle_root + '/eval'
datalist_file: $@bundle_root + '/datalist.json'
datalist_key: test
datalist: $monai.data.load_decathlon_datalist(@datalist_file, False, @datalist_key, @dataset_dir)

network_def:
  _target_: DenseNet121
  spatial_dims: 2
  in_channels: 1
  out_channels: '@num_classes'
{args}network: $@network_def.to(@device)

transforms:
- _target_: LoadImaged
  keys: '@image'
- _target_: EnsureChannelFirstd
  keys: '@image'
- _target_: ScaleIntensityd
  keys: '@image'

preprocessing:
  _target_: Compose
  transforms: $@transforms

dataset:
  _target_: Dataset
  data: '@datalist'
  transform: '@preprocessing'

dataloader:
  _target_: DataLoader
  dataset: '@dataset'
  batch_size: '@batch_size'
  shuffle: false
  num_workers: '@num_workers'

inferer:
  _target_: SimpleInferer

postprocessing:
  _target_: Compose
  transforms:
  - _target_: Activationsd
    keys: '@pred'
    softmax: true

handlers:
- _target_: CheckpointLoader
  load_path: '@ckpt_path'
  load_dict:
    model: '@network'
  map_location: '@device'
- _target_: StatsHandler
  iteration_log: false
- _target_: ClassificationSaver
  output_dir: '@output_dir'
  filename: predictions.csv
  batch_transform: '$lambda batch: [b[@image].meta for b in batch]'  # the engine's batch is decollated: a list
  output_transform: $monai.handlers.from_engine([@pred])

evaluator:
  _target_: SupervisedEvaluator
  device: '@device'
  val_data_loader: '@dataloader'
  network: '@network'
  inferer: '@inferer'
  postprocessing: '@postprocessing'
  val_handlers: '@handlers'
  amp: false

run:
- $@evaluator.run()
"""


def _metadata(name: str, description: str, channels: int, shape: list[int], classes: dict[str, str],
              channel_def: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import monai
    import numpy

    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20220324.json",
        "version": "0.1.0", "changelog": {"0.1.0": "initial version, trained by the imaging team"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__, "optional_packages_version": {"pydicom": _version("pydicom"),
                                                                          "pytorch-ignite": _version("pytorch-ignite")},
        "name": name, "task": description, "description": description, "authors": "a hospital imaging team",
        "copyright": "SYNTHETIC example", "data_source": "SYNTHETIC built-in cohort (not patient data)",
        **(extra or {}),
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR", "num_channels": channels,
                                 "spatial_shape": shape, "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": False, "channel_def": channel_def}},
            "outputs": {"pred": {"type": "probabilities", "format": "classes", "num_channels": len(classes),
                                 "spatial_shape": [1, len(classes)], "dtype": "float32",
                                 "value_range": [0, 1], "is_patch_data": False, "channel_def": classes}},
        },
    }


def _version(pkg: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return ""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_densenet_bundle(out: str | Path, net: torch.nn.Module, datalist: dict[str, Any], image_size: int,
                          info: dict[str, Any] | None = None) -> Path:
    """The classification_template tree for a trained DenseNet121 (overwrites files of the same name)."""
    out = Path(out)
    classes = dict(datalist["labels"])
    _write(out / "configs" / "inference.yaml", densenet_inference_yaml(len(classes)))
    meta = _metadata("Synthetic MR classification (DenseNet121)", "3-class classification of 2D SYNTHETIC MR images",
                     1, [image_size, image_size], classes, {"0": "image"},
                     {"eval_metrics": {"val_accuracy": (info or {}).get("best_val_accuracy")}})
    _write(out / "configs" / "metadata.json", json.dumps(meta, indent=4) + "\n")
    _write(out / "datalist.json", json.dumps(datalist, indent=2) + "\n")
    _write(out / "docs" / "README.md", "# Synthetic MR classification\n\nDenseNet121 trained with plain MONAI on "
           "a SYNTHETIC cohort (no patient data).\n\n```bash\npython -m monai.bundle run --config_file "
           "configs/inference.yaml --dataset_dir /path/to/archive\n```\nwrites eval/predictions.csv for the "
           "`test` images of datalist.json (`--datalist_key training` for others).\n")
    (out / "models").mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out / "models" / "model.pt")
    return out


def train_densenet_bundle(archive: str | Path, out: str | Path, epochs: int = 8, seed: int = 0,
                          exclude_device: str | None = None) -> dict[str, Any]:
    """Split by patient, train, write the bundle; returns {"bundle", "datalist", "train"} (train: timings, history)."""
    archive = Path(archive)
    datalist = make_datalist(archive, seed=seed, exclude_device=exclude_device)
    net, info = train_network(archive, datalist, epochs=epochs, seed=seed)
    size = int(_transforms()({"image": str(archive / datalist["training"][0]["image"])})["image"].shape[-1])
    bundle = write_densenet_bundle(out, net, datalist, size, info)
    return {"bundle": str(bundle), "datalist": str(bundle / "datalist.json"), "train": info}


def seresnet_inference(image_size: int) -> dict[str, Any]:
    """configs/inference.json in endoscopic_inbody_classification's style (RGB, NormalizeIntensity)."""
    key = "@image_key"
    return {
        "imports": ["$import json", "$import os", "$import torch"],
        "bundle_root": ".", "image_key": "image", "output_dir": "$@bundle_root + '/eval'",
        "output_filename": "predictions.csv", "dataset_dir": "$@bundle_root + '/data'",
        "datalist_key": "test",
        "test_dict": "$monai.data.load_decathlon_datalist(@bundle_root + '/datalist.json', False, @datalist_key, "
                     "@dataset_dir)",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "SEResNet50", "spatial_dims": 2, "in_channels": 3, "num_classes": 2},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": key, "image_only": False},
            {"_target_": "EnsureChannelFirstd", "keys": key, "channel_dim": -1},
            {"_target_": "Resized", "keys": key, "spatial_size": [image_size, image_size], "mode": "bilinear"},
            {"_target_": "CastToTyped", "dtype": "$torch.float32", "keys": key},
            {"_target_": "NormalizeIntensityd", "nonzero": True, "channel_wise": True, "keys": key},
            {"_target_": "EnsureTyped", "keys": key},
        ]},
        "dataset": {"_target_": "Dataset", "data": "@test_dict", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True}]},
        "handlers": [{"_target_": "StatsHandler", "iteration_log": False},
                     {"_target_": "ClassificationSaver", "output_dir": "@output_dir", "filename": "@output_filename",
                      "batch_transform": "$lambda batch: [b[@image_key].meta for b in batch]",
                      "output_transform": "$monai.handlers.from_engine(['pred'])"}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers"},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network"}, "map_location": "@device"},
        "initialize": ["$monai.utils.set_determinism(seed=123)", "$@checkpointloader(@evaluator)"],
        "run": ["$@evaluator.run()"],
    }


def write_rgb_archive(grey_archive: str | Path, out: str | Path, limit: int | None = None) -> dict[str, Any]:
    """RGB (8-bit, SamplesPerPixel 3) copies of a grey DICOM archive's images, headers kept; labels.csv mapped
    to two classes (normal vs abnormal) and a datalist.json "test" list of every image."""
    import numpy as np
    import pydicom

    grey_archive, out = Path(grey_archive), Path(out)
    rows = _read_labels(grey_archive)[:limit]
    lines, entries = ["path,label"], []
    for r in rows:
        ds = pydicom.dcmread(grey_archive / r["path"])
        px = ds.pixel_array.astype(np.float64)
        px = (px - px.min()) / max(px.max() - px.min(), 1e-9)
        rgb = np.stack([px, px ** 0.7, 1.0 - 0.5 * px], axis=-1)
        ds.PixelData = np.round(rgb * 255).astype(np.uint8).tobytes()
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        for tag in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope"):
            if tag in ds:
                delattr(ds, tag)
        rel = Path(r["path"]).with_suffix(".dcm")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out / rel, enforce_file_format=True)
        label = "normal" if r["label"] == "normal" else "abnormal"
        lines.append(f"{rel.as_posix()},{label}")
        entries.append({"image": rel.as_posix(), "label": int(label == "abnormal")})
    _write(out / "labels.csv", "\n".join(lines) + "\n")
    return {"archive": str(out), "n_images": len(entries), "test": entries}


def write_seresnet_bundle(out: str | Path, image_size: int = 64, seed: int = 0,
                          test: list[dict[str, Any]] | None = None) -> Path:
    """An endoscopic-layout RGB SEResNet50 bundle with random weights (seeded); `test` fills datalist.json."""
    from monai.networks.nets import SEResNet50

    out = Path(out)
    torch.manual_seed(seed)
    net = SEResNet50(spatial_dims=2, in_channels=3, num_classes=2).eval()
    classes = {"0": "normal", "1": "abnormal"}
    _write(out / "configs" / "inference.json", json.dumps(seresnet_inference(image_size), indent=4) + "\n")
    meta = _metadata("Synthetic RGB classification (SEResNet50)", "binary classification of RGB images", 3,
                     [image_size, image_size], classes, {"0": "R", "1": "G", "2": "B"},
                     {"data_type": "RGB", "image_classes": "three channel data, intensity [0-255]"})
    _write(out / "configs" / "metadata.json", json.dumps(meta, indent=4) + "\n")
    _write(out / "datalist.json", json.dumps({"labels": classes, "test": list(test or [])}, indent=2) + "\n")
    (out / "models").mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "models" / "model.pt")
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Train a DenseNet121 classification bundle with plain MONAI code.")
    ap.add_argument("archive", type=Path, help="DICOM archive with a labels.csv (path,label)")
    ap.add_argument("out", type=Path, help="bundle folder to write (files of the same name are overwritten)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not (a.archive / "labels.csv").is_file():
        raise SystemExit(f"error: expected {a.archive}/labels.csv (path,label), but it is missing")
    done = train_densenet_bundle(a.archive, a.out, epochs=a.epochs, seed=a.seed)
    info = done["train"]
    print(f"Trained DenseNet121 with plain MONAI code in {info['wall_time_s']:.1f} s (best validation accuracy "
          f"{info['best_val_accuracy']:.1f} %); wrote the bundle {done['bundle']} (SYNTHETIC data)")


if __name__ == "__main__":
    main()
