"""Export a checkpoint as a MONAI bundle that MONAI runs on its own, and load such bundles safely.

Layout: configs/inference.json (MONAI conventions; see bundle_config), configs/metadata.json (MONAI
schema fields + per-policy acceptance; see bundle_meta), configs/medunlearn_meta.json (the source
meta.json), models/model.ts (TorchScript: runs without medunlearn), models/model.pt (state dict for
`torch.load(weights_only=True)`), docs/README.md.

`load_bundle` is for bundles from anywhere: it checks the configs against medunlearn's vocabulary
(bundle_safety), builds the zoo architecture from literal arguments, and reads model.pt with
weights_only=True. It never evaluates a config and never loads model.ts.
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from medunlearn.commit import staging_dir
from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.fileio import read_json, write_bytes, write_json, write_text
from medunlearn.models.bundle_config import ZOO_TARGET, inference_config
from medunlearn.models.bundle_meta import INTENDED_USE, bundle_metadata
from medunlearn.models.bundle_safety import check_config, check_metadata, literal_args, qualified_target
from medunlearn.models.checkpoint import (
    MAX_PARAMETERS,
    check_arch_bounds,
    import_state_dict,
    load_checkpoint,
    load_state_into,
    model_sha256,
)
from medunlearn.models.checkpoint import _count_parameters as count_parameters
from medunlearn.models.finite import check_finite_outputs
from medunlearn.models.zoo import Classifier, model_from_arch
from medunlearn.provenance import sha256_file

TS_ATOL = 1e-4  # TorchScript vs eager logits on a random batch


def spatial_dims_of(meta: dict[str, Any]) -> int:
    """meta["spatial_dims"] (else the architecture's, 2 or 3); 2 for checkpoints that predate 3D models."""
    kwargs = (meta.get("architecture") or {}).get("kwargs") or {}
    dims = meta.get("spatial_dims", kwargs.get("spatial_dims", 2))
    if dims not in (2, 3):
        raise CheckpointError(f"Expected meta spatial_dims 2 or 3, but got {dims!r}.")
    return int(dims)


def to_torchscript(model: Classifier, example: torch.Tensor) -> tuple[torch.jit.ScriptModule, str]:
    """Script the model (trace when scripting fails); check it reproduces the eager logits on `example`."""
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; MONAI reads .ts
        try:
            ts, how = torch.jit.script(model), "script"
        except Exception:
            ts, how = torch.jit.trace(model, example), "trace"
    with torch.no_grad():
        want = model(example)
        if not torch.isfinite(want).all():
            raise CheckpointError("Expected finite logits from the checkpoint on a random input, but got NaN or "
                                  "inf; refusing to export.")
        gap = float((ts(example) - want).abs().max())
    if not gap <= TS_ATOL:
        raise CheckpointError(f"Expected the TorchScript model to match the checkpoint within {TS_ATOL}, but the "
                              f"largest logit difference is {gap:.3g}; refusing to export.")
    return ts, how


def _ts_bytes(ts: torch.jit.ScriptModule, metadata: dict[str, Any], inference: dict[str, Any]) -> bytes:
    """The TorchScript archive with metadata.json and inference.json inside (as MONAI's ckpt_export does)."""
    buf = io.BytesIO()
    extra = {"metadata.json": json.dumps(metadata).encode(), "inference.json": json.dumps(inference).encode()}
    torch.jit.save(ts, buf, _extra_files=extra)
    return strip_debug_records(buf.getvalue())


def strip_debug_records(archive: bytes) -> bytes:
    """The TorchScript zip without its `*.debug_pkl` records: they hold source ranges with the absolute paths of
    this machine's install (the package's and torch's sources). torch.jit.load does not need them; an error
    inside the scripted model then names no source line."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if not info.filename.endswith(".debug_pkl"):
                zout.writestr(info, zin.read(info.filename))
    return out.getvalue()


def export_bundle(ckpt_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write a MONAI bundle for a checkpoint directory; refuses a non-empty out_dir unless overwrite."""
    model, meta = load_checkpoint(ckpt_dir)  # refuses non-finite weights
    check_finite_outputs(model, f"checkpoint {Path(ckpt_dir).name!r}")
    dims = spatial_dims_of(meta)
    size, chans = int(meta.get("image_size") or 64), int(meta.get("in_channels") or 1)
    example = torch.rand(2, chans, *[size] * dims, generator=torch.Generator().manual_seed(0))
    ts, how = to_torchscript(model, example)
    sha = model_sha256(ckpt_dir)
    inference = inference_config(meta["architecture"], size, chans, dims)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with staging_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "models").mkdir()
        torch.save(state, tmp / "models" / "model.pt")
        extra = {"kind": meta.get("kind", "base"), "architecture": meta["architecture"], "spatial_dims": dims,
                 "source_sha256": sha, "code_version": str(meta.get("code_version", "")), "torchscript": how,
                 "model_pt_sha256": sha256_file(tmp / "models" / "model.pt")}
        metadata = bundle_metadata(meta, model.num_classes, dims, ckpt_dir, extra)
        write_bytes(tmp / "models" / "model.ts", _ts_bytes(ts, metadata, inference))
        write_json(tmp / "configs" / "inference.json", inference)
        write_json(tmp / "configs" / "metadata.json", metadata)
        write_json(tmp / "configs" / "medunlearn_meta.json", {**meta, "source_sha256": sha})
        write_text(tmp / "docs" / "README.md", _readme(meta, metadata, sha))
    return Path(out_dir)


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    """{"name", "kwargs"} from inference.json's medunlearn_network_def (or a legacy "architecture" record)."""
    comp = config.get("medunlearn_network_def")
    if comp is None and isinstance(config.get("architecture"), dict):  # bundles exported before MONAI configs
        return config["architecture"]
    if not isinstance(comp, dict) or qualified_target(str(comp.get("_target_"))) != ZOO_TARGET:
        got = comp.get("_target_") if isinstance(comp, dict) else type(comp).__name__
        raise CheckpointError(f"Expected inference.json medunlearn_network_def with _target_ {ZOO_TARGET!r}, "
                              f"but got {got!r}.")
    args = literal_args(comp, "medunlearn_network_def")
    name = args.pop("name", None)
    return {"name": name, "kwargs": args}


def load_bundle(bundle_dir: str | Path) -> Classifier:
    """Rebuild the network of a bundle (eval mode) after checking its configs; weights via weights_only=True."""
    root = Path(bundle_dir)
    cfg_path, meta_path, weights = (root / "configs" / "inference.json", root / "configs" / "metadata.json",
                                    root / "models" / "model.pt")
    if not cfg_path.is_file():
        raise CheckpointError(f"Expected a bundle with configs/inference.json, but got {str(root)!r}.")
    config = read_json(cfg_path)
    check_config(config)
    metadata = read_json(meta_path) if meta_path.is_file() else {}
    check_metadata(metadata)
    arch = _architecture(config)
    check_arch_bounds(arch, "inference.json medunlearn_network_def")  # sizes first: nothing is allocated yet
    try:
        n_params = count_parameters(arch)
        if n_params > MAX_PARAMETERS:
            raise CheckpointError(f"Expected at most {MAX_PARAMETERS:,} parameters in bundle {root.name!r}, but its "
                                  f"network asks for {n_params:,}; refusing to load it.")
        model = model_from_arch(arch)
    except ConfigError as exc:
        raise CheckpointError(f"Bundle {root}: {exc}") from exc
    recorded = (metadata.get("medunlearn") or {}).get("model_pt_sha256") if isinstance(metadata, dict) else None
    if recorded and weights.is_file() and sha256_file(weights) != recorded:
        raise CheckpointError(f"Expected models/model.pt with the sha256 recorded in metadata.json "
                              f"({str(recorded)[:12]}…), but the file differs; it changed after export.")
    load_state_into(model, import_state_dict(weights), source="bundle model.pt")
    check_finite_outputs(model, "bundle model.pt")
    return model.eval()


def _readme(meta: dict[str, Any], metadata: dict[str, Any], sha: str) -> str:
    fmt = metadata["network_data_format"]
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    shape = "x".join(str(s) for s in image["spatial_shape"])
    acc = metadata["acceptance"]
    lines = [
        f"# {metadata['name']}", "", metadata["description"], "",
        "## Run with MONAI (medunlearn not needed)", "```bash", "cd <this folder>",
        "python -m monai.bundle run --config_file configs/inference.json --dataset_dir /path/to/images", "```",
        "Reads every DICOM / NIfTI file under `dataset_dir` (`image_glob`, default `**/*`), writes",
        "`eval/predictions.csv` (file, then one probability per class in the order below) and",
        "`eval/predicted_class.csv` (file, class index). Add `--bundle_root <folder>` to run from elsewhere.", "",
        "## Input",
        f"- {image['num_channels']} channel(s), {shape} px after resizing; one grey plane per image, min-max scaled "
        "to [0, 1] (normalisation happens inside the network).", "",
        "## Output", f"- softmax probabilities over {pred['num_channels']} classes: "
        + ", ".join(f"{k} = {v}" for k, v in pred["channel_def"].items()), "",
        "## Files",
        "- `models/model.ts`: TorchScript network (MONAI's `network_def`).",
        "- `models/model.pt`: the same weights as a plain state dict; `medunlearn_network_def` in",
        "  configs/inference.json names its architecture. With medunlearn installed:", "```python",
        "from medunlearn.models.bundle import load_bundle", "model = load_bundle('.')  # checks configs, weights_only",
        "```", f"Source checkpoint sha256: `{sha}`.", "",
        f"## Acceptance: {acc['status']}",
        *([f"- {p['policy']}: {p['status']}" for p in acc["policies"]] or ["- no unlearning policy"]), "",
        "## Changelog", *[f"- {v}: {t}" for v, t in metadata["changelog"].items()], "", "## Metrics",
        *([f"- {k}: {v}" for k, v in metadata["eval_metrics"].items()] or ["- none recorded"]), "",
        "## Intended use", INTENDED_USE, "",
    ]
    if meta.get("synthetic"):
        lines += ["Trained on medunlearn's SYNTHETIC built-in cohort: no patient data.", ""]
    return "\n".join(lines)
