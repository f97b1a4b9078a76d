"""`medunlearn train`: the deployed model, or (with a forget rule and --exclude) the retrain reference."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medunlearn.cli import options as o
from medunlearn.cli.app import app, console, guarded
from medunlearn.runtime import is_main_process

# the options `train` and `retrain` share (one definition, so their bounds and help cannot drift apart)
Out = Annotated[Path, typer.Option("--out", help="Checkpoint directory to write.")]
Model = Annotated[str, typer.Option("--model", help="Architecture (see `medunlearn models`); default allcnn for images, densenet_small for volumes; a retrain should use the base model's.")]
Epochs = Annotated[int | None, typer.Option("--epochs", min=1, max=10_000, help="Training epochs; default 8 for images, 30 for volumes.")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", min=1, max=65_536, help="Default 64 for images, 8 for volumes.")]
Lr = Annotated[float, typer.Option("--lr", min=1e-12, max=10.0, help="Peak learning rate (one-cycle SGD).")]
ImageSize = Annotated[int | None, typer.Option("--image-size", min=8, max=4096, help="Images are resized to this square (volumes: cube) size; default 64 (volumes: 32).")]
SpatialDims = Annotated[int | None, typer.Option("--spatial-dims", help="2 (images) or 3 (volumes); default: 3 when every cohort row is a volume.")]


@app.command("train")
@guarded
def train(
    cohort: o.CohortOpt,
    out: Out,
    model: Model = "",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = 0.05,
    image_size: ImageSize = None,
    spatial_dims: SpatialDims = None,
    cache_dir: o.CacheDir = None,
    torch_device: o.TorchDevice = None,
    exclude: Annotated[bool, typer.Option("--exclude", help="Train without the rows matching the forget rule: the retrain reference.")] = False,
    device: o.Device = None, site: o.Site = None, manufacturer: o.Manufacturer = None, patient: o.Patient = None,
    study_date_before: o.Before = None, study_date_after: o.After = None, where: o.Where = None,
    outliers: o.Outliers = None, rules: o.Rules = None,
    seed: o.Seed = 0,
    overwrite: o.Overwrite = False,
) -> None:
    """Train a classifier on the cohort's patient-level train split.

    Examples:
      [bold]medunlearn train --cohort cohort.csv --out base/[/]
      [bold]medunlearn train --cohort cohort.csv --out retrain/ --device ScannerX --exclude[/]
      [bold]torchrun --nproc-per-node 2 -m medunlearn.cli.main train --cohort cohort.csv --out base/[/]
    """
    from medunlearn.workflow.steps_train import train as run_train

    rule = o.rule_from_options(device, site, manufacturer, patient, study_date_before, study_date_after,
                               where, outliers, rules)
    path, info = run_train(cohort, out, rule=rule, exclude=exclude, seed=seed, image_size=image_size,
                           overwrite=overwrite, progress=True, model=model, epochs=epochs,
                           batch_size=batch_size, lr=lr, spatial_dims=spatial_dims, cache_dir=cache_dir,
                           torch_device=o.checked_torch_device(torch_device))
    if not is_main_process():
        return
    console.print(f"[green]Wrote[/] {path}: {'retrain reference' if exclude else 'base model'}, "
                  f"{info['wall_time_s']:.1f} s, best val acc {info['best_val_acc']:.1f} % (epoch {info['best_epoch']})")


@app.command("retrain")
@guarded
def retrain(
    cohort: o.CohortOpt,
    out: Out,
    model: Model = "",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = 0.05,
    image_size: ImageSize = None,
    spatial_dims: SpatialDims = None,
    cache_dir: o.CacheDir = None,
    torch_device: o.TorchDevice = None,
    device: o.Device = None, site: o.Site = None, manufacturer: o.Manufacturer = None, patient: o.Patient = None,
    study_date_before: o.Before = None, study_date_after: o.After = None, where: o.Where = None,
    outliers: o.Outliers = None, rules: o.Rules = None,
    seed: o.Seed = 0,
    overwrite: o.Overwrite = False,
) -> None:
    """Retrain from scratch without the rows matching a forget rule: the reference unlearning is judged against
    (the same as `train --exclude`).

    Example: [bold]medunlearn retrain --cohort cohort.csv --out retrain/ --device ScannerX[/]
    """
    train(cohort=cohort, out=out, model=model, epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size,
          exclude=True, device=device, site=site, manufacturer=manufacturer, patient=patient,
          study_date_before=study_date_before, study_date_after=study_date_after, where=where, outliers=outliers,
          rules=rules, seed=seed, overwrite=overwrite, spatial_dims=spatial_dims, cache_dir=cache_dir,
          torch_device=torch_device)
