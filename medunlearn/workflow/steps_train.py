"""`train`: the deployed (base) model, or with exclude=True the retrain-from-scratch reference."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from medunlearn.bounds import check_config_bounds
from medunlearn.errors import ConfigError
from medunlearn.fileio import prepare_out_dir
from medunlearn.models.finite import check_finite_outputs
from medunlearn.provenance import provenance_record
from medunlearn.runtime import RunContext
from medunlearn.workflow.common import (DEFAULT_FRACTIONS, DEFAULT_IMAGE_SIZE, check_spatial_dims, cohort_spatial_dims,
                                       is_synthetic, load_cohort, split_data_for, warn_near_miss_labels)


def train(cohort: Any, out: str | Path, rule=None, exclude: bool = False, seed: int = 0, image_size: int | None = None,
          overwrite: bool = False, progress: bool = False, spatial_dims: int | None = None,
          cache_dir: str | Path | None = None, torch_device: str | None = None,
          **train_options: Any) -> tuple[Path, dict]:
    """Train on the train split (all of it, or minus the forget rows when `exclude`). Returns (checkpoint, info).

    spatial_dims None follows the cohort (3 when every row is a volume); image_size None and model ""
    take that dimensionality's defaults. `train_options` are TrainConfig fields (model, epochs, lr, ...).
    torch_device: "cpu" (default) or "cuda" (AMP on). Under torchrun every rank trains its slice of each
    global batch (DDP) and only rank 0 writes the checkpoint.
    """
    from medunlearn.models.checkpoint import save_checkpoint
    from medunlearn.models.train import TrainConfig, make_meta, train_model
    from medunlearn.models.zoo import default_model
    from medunlearn.unlearn.base import apply_overrides

    if exclude and rule is None:
        raise ConfigError("Expected a forget rule (e.g. --device) with --exclude, but got none.")
    df = load_cohort(cohort)
    warn_near_miss_labels(df)
    dims = check_spatial_dims(spatial_dims) if spatial_dims is not None else cohort_spatial_dims(df)
    image_size = int(image_size or DEFAULT_IMAGE_SIZE[dims])
    cfg = apply_overrides(TrainConfig(), {**train_options, "image_size": image_size})
    check_config_bounds(cfg, "train")
    cfg.model = cfg.model or default_model(dims)
    ctx = RunContext.create(seed=seed, device=torch_device or "cpu", show_progress=progress)
    if ctx.is_main:
        out = prepare_out_dir(out, overwrite)
    data = split_data_for(df, rule, seed=seed, image_size=image_size, fractions=DEFAULT_FRACTIONS,
                          spatial_dims=dims, cache_dir=cache_dir)
    model, info = train_model(data, cfg, ctx, exclude_forget=exclude)
    check_finite_outputs(model, "the trained model", data.val_retain.images[:16] if len(data.val_retain) else None)
    meta = make_meta("retrain" if exclude else "base", cfg, data, info, model)
    meta["split"] = {"seed": seed, "fractions": list(DEFAULT_FRACTIONS), "train_hash": data.info.get("train_hash")}
    meta["synthetic"] = is_synthetic(df)
    inputs = {"cohort": data.info.get("cohort_hash", ""), "split": data.info.get("split_hash", "")}
    prov = provenance_record(dataclasses.asdict(cfg), seed, inputs, run=ctx.run_record())
    if ctx.is_main:
        save_checkpoint(out, model, meta, overwrite=overwrite, provenance=prov)
    ctx.barrier()  # other ranks return once the checkpoint exists
    return Path(out), info
