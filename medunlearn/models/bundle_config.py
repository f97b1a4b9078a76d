"""configs/inference.json of an exported MONAI bundle, written to MONAI's bundle conventions.

`python -m monai.bundle run --config_file configs/inference.json` (from the bundle folder, or with
`--bundle_root`) loads every image under `dataset_dir`, applies the same MONAI transforms medunlearn's own
data path uses, runs the TorchScript network `models/model.ts` and writes `eval/predictions.csv` (file,
one softmax probability per class) and `eval/predicted_class.csv` (file, class index). Nothing in it
needs medunlearn installed.

The config contains only `_target_`s from `ALLOWED_TARGETS` and only the fixed `$` expressions in
`EXPRESSIONS`; `bundle_safety` refuses any other, so a bundle that passes medunlearn's loader names no
code beyond this vocabulary. Expressions only ever reference other items of the same config.
"""
from __future__ import annotations

from typing import Any

ZOO_TARGET = "medunlearn.models.zoo.create_model"

# Every `$` string medunlearn writes, verbatim. MONAI evaluates them; medunlearn never does.
IMPORTS = ["$import glob", "$import os"]
DEVICE = "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"
MODEL_TS = "$@bundle_root + '/models/model.ts'"
DATASET_DIR = "$@bundle_root + '/images'"
OUTPUT_DIR = "$@bundle_root + '/eval'"
DATALIST = ("$sorted(f for f in glob.glob(os.path.join(@dataset_dir, @image_glob), recursive=True) "
            "if os.path.isfile(f) and not f.lower().endswith(tuple(@skip_suffixes)))")
RECORDS = "$[{'image': f, 'source': {'filename_or_obj': f}} for f in @datalist]"
RUN = "$@evaluator.run()"
EXPRESSIONS = frozenset([*IMPORTS, DEVICE, MODEL_TS, DATASET_DIR, OUTPUT_DIR, DATALIST, RECORDS, RUN])

# Every `_target_` medunlearn writes (torch.device / torch.jit.load are needed to run the TorchScript model).
ALLOWED_TARGETS = frozenset({
    "torch.device", "torch.jit.load", ZOO_TARGET,
    "monai.transforms.Compose", "monai.transforms.LoadImaged", "monai.transforms.EnsureChannelFirstd",
    "monai.transforms.ScaleIntensityd", "monai.transforms.Resized", "monai.transforms.ThresholdIntensityd",
    "monai.transforms.RepeatChanneld", "monai.transforms.EnsureTyped", "monai.transforms.Activationsd",
    "monai.transforms.CopyItemsd", "monai.transforms.AsDiscreted",
    "monai.data.Dataset", "monai.data.DataLoader", "monai.data.NibabelReader", "monai.data.PydicomReader",
    "monai.inferers.SimpleInferer", "monai.engines.SupervisedEvaluator", "monai.handlers.ClassificationSaver",
    "monai.handlers.StatsHandler", "monai.handlers.from_engine",
})
# Files in `dataset_dir` that are never images (labels, sidecars, notes).
SKIP_SUFFIXES = [".json", ".csv", ".tsv", ".txt", ".md", ".html", ".yaml", ".yml", ".log"]


def preprocessing(image_size: int, in_channels: int, spatial_dims: int = 2) -> dict[str, Any]:
    """MONAI dictionary transforms equal to medunlearn's data path for single-plane grey images.

    Result per image: (C, S, S[, S]) float32 in [0, 1]. DICOM is read with pydicom (rows, cols), NIfTI with
    nibabel; intensities are min-max scaled, resized with anti-aliasing, clamped to [0, 1], and the grey
    plane is repeated to `in_channels`. medunlearn's own loader also reduces volumes and colour images to one
    grey plane; a 2D bundle expects images that already are one.
    """
    size = [int(image_size)] * int(spatial_dims)
    steps: list[dict[str, Any]] = [
        {"_target_": "monai.transforms.LoadImaged", "keys": "image", "image_only": True,
         "reader": [{"_target_": "monai.data.NibabelReader"},
                    {"_target_": "monai.data.PydicomReader", "swap_ij": False}]},
        {"_target_": "monai.transforms.EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
        {"_target_": "monai.transforms.ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0},
        {"_target_": "monai.transforms.Resized", "keys": "image", "spatial_size": size, "mode": "bilinear"
         if spatial_dims == 2 else "trilinear", "anti_aliasing": True},
        # clamp to [0, 1]: interpolation can overshoot by rounding
        {"_target_": "monai.transforms.ThresholdIntensityd", "keys": "image", "threshold": 0.0, "above": True,
         "cval": 0.0},
        {"_target_": "monai.transforms.ThresholdIntensityd", "keys": "image", "threshold": 1.0, "above": False,
         "cval": 1.0},
    ]
    if in_channels > 1:
        steps.append({"_target_": "monai.transforms.RepeatChanneld", "keys": "image", "repeats": int(in_channels)})
    steps.append({"_target_": "monai.transforms.EnsureTyped", "keys": "image", "track_meta": False})
    return {"_target_": "monai.transforms.Compose", "transforms": steps}


def postprocessing() -> dict[str, Any]:
    """logits "pred" -> softmax probabilities "pred", and their argmax as "pred_class"."""
    return {"_target_": "monai.transforms.Compose", "transforms": [
        {"_target_": "monai.transforms.Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "monai.transforms.CopyItemsd", "keys": "pred", "times": 1, "names": "pred_class"},
        {"_target_": "monai.transforms.AsDiscreted", "keys": "pred_class", "argmax": True},
    ]}


def _saver(filename: str, key: str) -> dict[str, Any]:
    return {"_target_": "monai.handlers.ClassificationSaver", "output_dir": "@output_dir", "filename": filename,
            "batch_transform": {"_target_": "monai.handlers.from_engine", "keys": ["source"]},
            "output_transform": {"_target_": "monai.handlers.from_engine", "keys": [key]}}


def zoo_network_def(arch: dict[str, Any]) -> dict[str, Any]:
    """The medunlearn architecture of models/model.pt as a `_target_` component (needs medunlearn)."""
    return {"_target_": ZOO_TARGET, "name": arch["name"], **dict(arch.get("kwargs", {}))}


def inference_config(arch: dict[str, Any], image_size: int, in_channels: int, spatial_dims: int = 2,
                     batch_size: int = 8) -> dict[str, Any]:
    """The full inference.json dictionary (MONAI bundle conventions, infer workflow properties)."""
    return {
        "imports": list(IMPORTS),
        "bundle_root": ".",
        "device": DEVICE,
        "dataset_dir": DATASET_DIR,
        "image_glob": "**/*",
        "skip_suffixes": list(SKIP_SUFFIXES),
        "output_dir": OUTPUT_DIR,
        "network_def": {"_target_": "torch.jit.load", "f": MODEL_TS, "map_location": "@device"},
        "network": "@network_def",
        "medunlearn_network_def": zoo_network_def(arch),
        "preprocessing": preprocessing(image_size, in_channels, spatial_dims),
        "datalist": DATALIST,
        "dataset": {"_target_": "monai.data.Dataset", "data": RECORDS, "transform": "@preprocessing"},
        "dataloader": {"_target_": "monai.data.DataLoader", "dataset": "@dataset", "batch_size": int(batch_size),
                       "shuffle": False, "num_workers": 0},
        "inferer": {"_target_": "monai.inferers.SimpleInferer"},
        "postprocessing": postprocessing(),
        "handlers": [_saver("predictions.csv", "pred"), _saver("predicted_class.csv", "pred_class")],
        "evaluator": {"_target_": "monai.engines.SupervisedEvaluator", "device": "@device",
                      "val_data_loader": "@dataloader", "network": "@network", "inferer": "@inferer",
                      "postprocessing": "@postprocessing", "val_handlers": "@handlers", "amp": False},
        "run": [RUN],
    }
