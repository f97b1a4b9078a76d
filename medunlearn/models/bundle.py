"""Export a checkpoint as a MONAI bundle (configs/metadata.json, configs/inference.json, models/model.pt, docs/).

The bundle is data only: inference.json names the zoo architecture and its options (no `_target_`, no `$`
expressions), and model.pt is a plain state dict readable with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medunlearn.errors import CheckpointError
from medunlearn.fileio import read_json, staging_dir, write_json, write_text
from medunlearn.models.checkpoint import import_state_dict, load_checkpoint, load_state_into, model_sha256
from medunlearn.models.finite import check_finite_outputs
from medunlearn.models.zoo import Classifier, model_from_arch
from medunlearn.provenance import environment

MONAI_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
INTENDED_USE = ("Research use only. A classifier for de-identified 2D medical images after machine unlearning "
                "of a named data group; not a medical device and not for clinical decisions.")


def _describe(entry: Any) -> str:
    """One readable line for a meta changelog entry (dicts from unlearn/merge steps, or strings)."""
    if not isinstance(entry, dict):
        return str(entry)
    head = entry.get("description") or entry.get("summary")
    parts = [f"{k}={v}" for k, v in entry.items() if k not in ("description", "summary", "metrics")
             and isinstance(v, (str, int, float, bool))]
    metrics = entry.get("metrics") or {}
    scalars = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
               if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    text = "; ".join(([head] if head else []) + parts + (["metrics: " + ", ".join(scalars)] if scalars else []))
    return text or json.dumps(entry, sort_keys=True, default=str)


def _changelog(meta: dict[str, Any]) -> dict[str, str]:
    """MONAI changelog {version: text}, newest first; one version per meta changelog entry."""
    entries = list(meta.get("changelog") or [])
    log = {"0.1.0": f"{meta.get('kind', 'base')} model exported by medunlearn (rule: {meta.get('rule') or 'n/a'})"}
    for i, entry in enumerate(entries, start=2):
        log[f"0.{i}.0"] = _describe(entry)
    return dict(reversed(list(log.items())))


def _metadata(meta: dict[str, Any], model: Classifier) -> dict[str, Any]:
    env = environment()
    names = list(meta.get("class_names") or [f"class{k}" for k in range(model.num_classes)])
    size, chans = int(meta.get("image_size") or 0), int(meta.get("in_channels") or 1)
    changelog = _changelog(meta)
    scalars = {k: v for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {
        "schema": MONAI_SCHEMA,
        "version": next(iter(changelog)),
        "changelog": changelog,
        "monai_version": env["monai"],
        "pytorch_version": env["torch"],
        "numpy_version": env["numpy"],
        "required_packages_version": {"medunlearn": str(meta.get("code_version", ""))},
        "name": f"medunlearn {meta['architecture']['name']} ({meta.get('kind', 'base')})",
        "task": f"{len(names)}-class 2D image classification",
        "description": (f"{meta['architecture']['name']} classifier ({meta.get('kind', 'base')} checkpoint); "
                        f"forget rule: {meta.get('rule') or 'n/a'}."),
        "authors": "medunlearn",
        "copyright": "Copyright (c) the medunlearn authors",
        "license": "Apache-2.0",
        "intended_use": INTENDED_USE,
        "eval_metrics": scalars,
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "any", "num_channels": chans,
                "spatial_shape": [size, size], "dtype": "float32", "value_range": [0, 1],
                "is_patch_data": False, "channel_def": {str(i): "image" for i in range(chans)},
            }},
            "outputs": {"pred": {
                "type": "probabilities", "format": "classes", "num_channels": len(names),
                "spatial_shape": [len(names)], "dtype": "float32", "value_range": [0, 1],
                "is_onehot": False, "channel_def": {str(i): n for i, n in enumerate(names)},
            }},
        },
    }


def _inference(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "network_def": {"zoo_model": meta["architecture"]["name"], "kwargs": meta["architecture"].get("kwargs", {})},
        "architecture": meta["architecture"],
        "class_names": list(meta.get("class_names") or []),
        "preprocessing": {"scale_intensity_to": [0, 1], "spatial_size": [meta.get("image_size")] * 2,
                          "normalisation": "inside the network (fixed mean/std buffers)"},
        "postprocessing": {"activation": "softmax", "output": "pred"},
        "model_file": "models/model.pt",
        "loader": "medunlearn.models.bundle.load_bundle",
    }


def _readme(meta: dict[str, Any], metadata: dict[str, Any], sha: str) -> str:
    arch = meta["architecture"]
    lines = [
        f"# {metadata['name']}", "", metadata["description"], "",
        "## Input", f"- {metadata['network_data_format']['inputs']['image']['num_channels']} channel(s), "
        f"{meta.get('image_size')}x{meta.get('image_size')} px, float32 pixels in [0, 1] (normalised inside).", "",
        "## Output", f"- logits over {metadata['task'].split('-')[0]} classes; softmax gives probabilities: "
        + ", ".join(meta.get("class_names") or []), "",
        "## Load", "```python", "import json, torch", "from medunlearn.models.zoo import model_from_arch",
        "arch = json.load(open('configs/inference.json'))['architecture']", "model = model_from_arch(arch)",
        "model.load_state_dict(torch.load('models/model.pt', weights_only=True))", "```", "",
        f"Architecture: `{arch['name']}` with {json.dumps(arch.get('kwargs', {}))}.",
        f"Source checkpoint sha256: `{sha}`.", "", "## Changelog",
        *[f"- {v}: {t}" for v, t in metadata["changelog"].items()], "", "## Metrics",
        *([f"- {k}: {v}" for k, v in metadata["eval_metrics"].items()] or ["- none recorded"]), "",
        "## Intended use", INTENDED_USE, "",
    ]
    return "\n".join(lines)


def export_bundle(ckpt_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write a MONAI bundle for a checkpoint directory; refuses a non-empty out_dir unless overwrite."""
    model, meta = load_checkpoint(ckpt_dir)  # refuses non-finite weights
    check_finite_outputs(model, f"checkpoint {Path(ckpt_dir).name!r}")
    metadata = _metadata(meta, model)
    sha = model_sha256(ckpt_dir)
    with staging_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "models").mkdir()
        write_json(tmp / "configs" / "metadata.json", metadata)
        write_json(tmp / "configs" / "inference.json", _inference(meta))
        write_json(tmp / "configs" / "medunlearn_meta.json", {**meta, "source_sha256": sha})
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / "models" / "model.pt")
        write_text(tmp / "docs" / "README.md", _readme(meta, metadata, sha))
    return Path(out_dir)


def load_bundle(bundle_dir: str | Path) -> Classifier:
    """Rebuild the network of an exported bundle (eval mode); weights read with weights_only=True."""
    root = Path(bundle_dir)
    if not (root / "configs" / "inference.json").is_file():
        raise CheckpointError(f"Expected a bundle with configs/inference.json, but got {str(root)!r}.")
    arch = read_json(root / "configs" / "inference.json").get("architecture")
    model = model_from_arch(arch)
    load_state_into(model, import_state_dict(root / "models" / "model.pt"), source="bundle model.pt")
    return model.eval()
