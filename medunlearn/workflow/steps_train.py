"""`train`: the deployed (base) model, or with exclude=True the retrain-from-scratch reference."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from medunlearn.bounds import check_config_bounds
from medunlearn.commit import prepare_out_dir
from medunlearn.errors import ConfigError
from medunlearn.models.finite import check_finite_outputs
from medunlearn.provenance import provenance_record
from medunlearn.runtime import RunContext
from medunlearn.selection.split import DEFAULT_FRACTIONS
from medunlearn.workflow.cohort_checks import (
    check_spatial_dims,
    cohort_spatial_dims,
    is_synthetic,
    load_cohort,
    warn_near_miss_labels,
)
from medunlearn.workflow.outputs import claims_output, train_inputs
from medunlearn.workflow.splits import split_data_for

log = logging.getLogger("medunlearn")
DEFAULT_IMAGE_SIZE = {2: 64, 3: 32}  # pixels per side; 32³ volumes keep 3D training CPU-sized
# epochs and batch per dimensionality when the user sets neither; 3D chosen on validation (docs/results/rte/rte.md)
DEFAULT_RECIPE = {2: {"epochs": 8, "batch_size": 64}, 3: {"epochs": 30, "batch_size": 8}}


@claims_output(train_inputs)  # inputs apart from the output; the output locked for the whole run
def train(cohort: Any, out: str | Path, rule=None, exclude: bool = False, seed: int = 0, image_size: int | None = None,
          overwrite: bool = False, progress: bool = False, spatial_dims: int | None = None,
          cache_dir: str | Path | None = None, torch_device: str | None = None,
          **train_options: Any) -> tuple[Path, dict]:
    """Train on the train split (all of it, or minus the forget rows when `exclude`). Returns (checkpoint, info).

    spatial_dims None follows the cohort (3 when every row is a volume); image_size None, model "" and epochs /
    batch_size None (or absent) take that dimensionality's defaults (DEFAULT_IMAGE_SIZE, DEFAULT_RECIPE).
    `train_options` are TrainConfig fields (model, epochs, lr, ...).
    torch_device: "cpu" (default) or "cuda" (AMP on). Under torchrun every rank trains its slice of each
    global batch (DDP) and only rank 0 writes the checkpoint.
    """
    from medunlearn.models.checkpoint import save_checkpoint
    from medunlearn.models.train import make_meta, train_model

    if exclude and rule is None:
        raise ConfigError("Expected a forget rule (e.g. --device) with --exclude, but got none.")
    df = load_cohort(cohort)
    warn_near_miss_labels(df)
    dims = check_spatial_dims(spatial_dims) if spatial_dims is not None else cohort_spatial_dims(df)
    cfg = training_config(dims, image_size, train_options)
    image_size = cfg.image_size
    ctx = RunContext.create(seed=seed, device=torch_device or "cpu", show_progress=progress)
    if ctx.is_main:
        prepare_out_dir(out, overwrite)
    data = split_data_for(df, rule, seed=seed, image_size=image_size, fractions=DEFAULT_FRACTIONS,
                          spatial_dims=dims, cache_dir=cache_dir)
    model, info = train_model(data, cfg, ctx, exclude_forget=exclude)
    warn_if_chance(info.get("best_val_acc"), data.num_classes, cfg.epochs)
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


def training_config(dims: int, image_size: int | None, train_options: dict[str, Any]):
    """The TrainConfig for data of `dims` spatial dimensions: the user's options (None = not given) over that
    dimensionality's defaults (DEFAULT_IMAGE_SIZE, DEFAULT_RECIPE, zoo.default_model)."""
    from medunlearn.models.train import TrainConfig
    from medunlearn.models.zoo import default_model
    from medunlearn.unlearn.base import apply_overrides

    given = {k: v for k, v in train_options.items() if v is not None}
    size = int(image_size or DEFAULT_IMAGE_SIZE[dims])
    cfg = apply_overrides(TrainConfig(), {**DEFAULT_RECIPE[dims], **given, "image_size": size})
    check_config_bounds(cfg, "train")
    cfg.model = cfg.model or default_model(dims)
    return cfg


def warn_if_chance(val_acc: float | None, num_classes: int, epochs: int) -> None:
    """A model no better than chance has nothing to forget: every criterion would be judged against noise."""
    chance = 100.0 / max(num_classes, 1)
    if val_acc is not None and val_acc <= chance + 5.0:
        log.warning(f"The trained model's best validation accuracy ({val_acc:.1f} %) is at chance ({chance:.1f} %) "
                    f"after {epochs} epochs: unlearning it would show nothing. Train longer (--epochs) or check "
                    f"the labels.")
