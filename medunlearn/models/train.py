"""Supervised training: the base model, and (exclude_forget=True) the retrain reference.

The retrain reference is the same recipe and seed on the retain rows only, so any gap between it and the
base model is caused by the forget set. The loop takes device, seed, rank and progress from a RunContext
and shards the training set by rank, so torchrun / DDP can drive it without a rewrite.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medunlearn.bounds import bounded, check_config_bounds
from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.errors import ConfigError, DataError, DivergenceError
from medunlearn.evaluate.functional import model_accuracy
from medunlearn.models.zoo import Classifier, create_model, default_model
from medunlearn.provenance import code_version
from medunlearn.registry import did_you_mean
from medunlearn.runtime import RunContext


@dataclass
class TrainConfig:
    """Training recipe (defaults follow docs/calibration: AllCNN, SGD Nesterov, one-cycle)."""

    model: str = ""  # zoo registry name; "" = the default for the data's dimensionality (zoo.DEFAULT_MODELS)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra create_model options (e.g. width)
    epochs: int = bounded(8, 1)  # full passes over the training set
    batch_size: int = bounded(64, 1)
    lr: float = bounded(0.05, 0, open_lo=True)  # one-cycle peak learning rate
    momentum: float = bounded(0.9, 0, 1, open_hi=True)  # SGD Nesterov momentum
    weight_decay: float = bounded(5e-4, 0)
    label_smoothing: float = bounded(0.0, 0, 1, open_hi=True)
    amp: bool = True  # mixed precision; only used on CUDA (bf16 when supported, else fp16 + grad scaling)
    image_size: int = bounded(64, 1)  # size the data pipeline resizes to; the model records the data's actual size
    eval_batch_size: int = bounded(256, 1)

    def validate(self) -> TrainConfig:
        """Types here; the ranges are field metadata (bounds.bounded)."""
        for name in ("epochs", "batch_size", "image_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"Expected train option {name} to be an integer, but got {value!r}.")
        for name in ("lr", "momentum", "weight_decay", "label_smoothing"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"Expected train option {name} to be a number, but got {value!r}.")
        check_config_bounds(self, "train", caps=False)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a YAML/JSON mapping; unknown keys raise ConfigError with a did-you-mean."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                raise ConfigError(f"Expected train options in {names}, but got {key!r}.{did_you_mean(key, names)}")
        return cls(**d).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _amp_settings(cfg: TrainConfig, device: torch.device) -> tuple[bool, torch.dtype]:
    if not (cfg.amp and device.type == "cuda"):
        return False, torch.float32
    return True, (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def _on_device(s: ImageSet, device: torch.device) -> ImageSet:
    # Small medical cohorts fit in GPU memory: one copy up front removes per-step host->device transfers.
    return s if device.type == "cpu" else ImageSet(s.images.to(device), s.labels.to(device), s.meta)


def _wrap_ddp(model: nn.Module, ctx: RunContext) -> nn.Module:
    dist = torch.distributed
    if ctx.world_size > 1 and dist.is_available() and dist.is_initialized():
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def _batches(s: ImageSet, cfg: TrainConfig, ctx: RunContext, epoch: int, drop_last: bool):
    """The epoch's batches. Under DDP every rank draws the single-process global batch order (rank 0's seed)
    and takes its slice of each global batch, so the averaged gradient is the one-process gradient of the
    same global batch; only BatchNorm statistics (per local batch) and summation order differ."""
    seed = ctx.rank_seed * 10_007 + epoch
    if ctx.world_size == 1:
        yield from s.loader(cfg.batch_size, shuffle=True, seed=seed, drop_last=drop_last)
        return
    gen = torch.Generator().manual_seed((ctx.rank_seed - ctx.rank) * 10_007 + epoch)
    # torch takes any sized, indexable sequence as a map-style dataset; its stubs want a Dataset
    order: torch.utils.data.DataLoader[int] = torch.utils.data.DataLoader(
        range(len(s)), batch_size=cfg.batch_size, shuffle=True, generator=gen,  # type: ignore[arg-type]
        drop_last=drop_last)
    for idx in order:
        local = idx[ctx.rank::ctx.world_size].to(s.labels.device)
        yield {"image": s.images[local], "label": s.labels[local]}


def _all_sum(values: list[float], ctx: RunContext) -> list[float]:
    if ctx.world_size == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def train_model(data: SplitData, cfg: TrainConfig, ctx: RunContext,
                exclude_forget: bool = False) -> tuple[Classifier, dict[str, Any]]:
    """Train `cfg.model` on data.train (or data.train_retain when exclude_forget: the retrain reference).

    Keeps the epoch with the best validation accuracy (data.val, or data.val_retain when exclude_forget).
    Returns (model in eval mode on ctx.device, info with wall_time_s, history, best_epoch, n_train, ...).
    """
    cfg.validate()
    train_set = data.train_retain if exclude_forget else data.train
    val_set = data.val_retain if exclude_forget else data.val
    if len(train_set) == 0:
        raise DataError(f"Expected training images, but the {'retain' if exclude_forget else 'train'} set is empty.")
    if cfg.batch_size < ctx.world_size:
        raise ConfigError(f"Expected batch_size >= the number of processes ({ctx.world_size}), "
                          f"but got {cfg.batch_size}.")
    device = ctx.device
    use_amp, amp_dtype = _amp_settings(cfg, device)
    train_set, val_set = _on_device(train_set, device), _on_device(val_set, device)
    c, h = data.in_shape[0], data.in_shape[1]
    ctx.seed_everything()  # model init and shuffles depend only on the seed (and rank)
    name = cfg.model or default_model(data.spatial_dims)
    model = create_model(name, data.num_classes, in_channels=c, image_size=h, spatial_dims=data.spatial_dims,
                         **cfg.model_kwargs).to(device)
    net = _wrap_ddp(model, ctx)

    drop_last = len(train_set) > cfg.batch_size  # a ragged last batch adds noise to BN statistics
    steps = len(train_set) // cfg.batch_size if drop_last else 1
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    history: list[dict[str, float]] = []
    best_acc, best_epoch = -1.0, 0
    best_state: dict[str, torch.Tensor] | None = None
    start = time.perf_counter()
    from medunlearn.unlearn.cost import counting  # images with a gradient / forward only (rte_compute)

    with counting(phase="train") as counter:  # this rank's images (DDP: each rank counts its own shard)
        with ctx.progress(f"train {name}{' (retain only)' if exclude_forget else ''}", cfg.epochs * steps) as advance:
            for epoch in range(1, cfg.epochs + 1):
                net.train()
                loss_sum, correct, seen, wait_s, step_s = 0.0, 0, 0, 0.0, 0.0
                t0 = time.perf_counter()
                for batch in _batches(train_set, cfg, ctx, epoch, drop_last):
                    t1 = time.perf_counter()
                    x = batch["image"].to(device, non_blocking=True)
                    y = batch["label"].to(device, non_blocking=True)
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                        logits = net(x)
                        loss = loss_fn(logits.float(), y)
                    loss_value = float(loss.detach())  # one sync per step: divergence check and honest timing
                    if not math.isfinite(loss_value):
                        raise DivergenceError(f"Expected a finite training loss, but got {loss_value} at epoch {epoch} "
                                              f"(lr={cfg.lr}); lower the learning rate.")
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    sched.step()
                    loss_sum += loss_value * len(y)
                    correct += int((logits.detach().argmax(1) == y).sum())
                    seen += len(y)
                    advance(1)
                    t0, wait_s, step_s = time.perf_counter(), wait_s + (t1 - t0), step_s + (time.perf_counter() - t1)
                loss_total, n_correct, n_seen = _all_sum([loss_sum, float(correct), float(seen)], ctx)
                with counter.phase("validation"):
                    val_acc = model_accuracy(model, val_set.images, val_set.labels, cfg.eval_batch_size, device,
                                             amp_dtype if use_amp else None)
                history.append({"epoch": epoch, "loss": loss_total / max(n_seen, 1),
                                "train_acc": 100.0 * n_correct / max(n_seen, 1),
                                "val_acc": val_acc, "data_wait_s": wait_s, "step_s": step_s,
                                "lr_end": float(sched.get_last_lr()[0])})
                score = val_acc if math.isfinite(val_acc) else float(epoch)  # no val set: keep the last epoch
                if score >= best_acc:  # ties go to the later (lower-lr) epoch
                    best_acc, best_epoch = score, epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    wall = time.perf_counter() - start
    assert best_state is not None  # every epoch scores >= 0 > the initial best, and epochs >= 1
    model.load_state_dict(best_state)
    model.eval()
    info = {
        "wall_time_s": wall, "history": history, "best_epoch": best_epoch,
        "best_val_acc": history[best_epoch - 1]["val_acc"], "n_train": len(train_set), "n_val": len(val_set),
        "exclude_forget": exclude_forget, "seed": ctx.seed, "device": str(device), "world_size": ctx.world_size,
        "amp": str(amp_dtype).replace("torch.", "") if use_amp else "off", "cost": counter.record(),
    }
    return model, info


def _finite_or_none(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def make_meta(kind: str, cfg: TrainConfig, data: SplitData, info: dict[str, Any], model: Classifier) -> dict[str, Any]:
    """The checkpoint meta dict (keys per docs/ARCHITECTURE.md) for a trained base or retrain model."""
    c, h = data.in_shape[0], data.in_shape[1]
    return {
        "kind": kind,
        "architecture": copy.deepcopy(model.arch),
        "class_names": list(data.class_names),
        "image_size": int(h),
        "in_channels": int(c),
        "spatial_dims": int(data.spatial_dims),
        "config": {**cfg.to_dict(), "model": model.arch["name"],
                   "exclude_forget": bool(info.get("exclude_forget", False))},
        "seed": info.get("seed"),
        "code_version": code_version(),
        "cohort_hash": data.info.get("cohort_hash"),
        "split_hash": data.info.get("split_hash"),
        "rule": data.info.get("rule"),
        "wall_time_s": float(info["wall_time_s"]),
        "changelog": [],
        "metrics": {"best_val_acc": _finite_or_none(info.get("best_val_acc")), "best_epoch": info.get("best_epoch"),
                    "n_train": info.get("n_train")},
        "training": {"history": info.get("history", []), "device": info.get("device"), "amp": info.get("amp"),
                     "world_size": info.get("world_size", 1), "cost": info.get("cost")},
    }
