"""Training throughput: MONAI CacheDataset loop vs the in-memory tensor ImageSet loader.

Measures images/s and the fraction of step time spent waiting for data after epoch 1 (target < 10 %).
(a) monai.data.CacheDataset over in-memory dict records with MONAI dictionary transforms, fed by a
    monai DataLoader (workers, pinned memory); (b) medunlearn's train_model on ImageSet tensors (held on
    the device). Prints a table; it is a measurement, not a test.

    python benchmarks/train_throughput.py --model allcnn --n 4096 --image-size 64 --epochs 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.models.train import TrainConfig, train_model
from medunlearn.models.zoo import create_model
from medunlearn.runtime import RunContext


def synthetic(n: int, size: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, size, size) uint16 'raw' images with a class-dependent bright quadrant, and labels."""
    g = np.random.default_rng(seed)
    labels = g.integers(0, classes, n)
    imgs = g.normal(800, 150, (n, 1, size, size))
    h = size // 2
    for i, y in enumerate(labels):
        r, c = divmod(int(y) % 4, 2)
        imgs[i, 0, r * h:(r + 1) * h, c * h:(c + 1) * h] += 1200
    return np.clip(imgs, 0, 4095).astype(np.uint16), labels.astype(np.int64)


def bench_cachedataset(raw: np.ndarray, labels: np.ndarray, cfg: TrainConfig, ctx: RunContext,
                       workers: int) -> list[dict[str, float]]:
    """Train loop over a monai CacheDataset; returns per-epoch {images_s, wait_s, step_s}."""
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import Compose, EnsureTyped, ScaleIntensityRanged

    records = [{"image": raw[i], "label": labels[i]} for i in range(len(labels))]
    tf = Compose([ScaleIntensityRanged("image", a_min=0, a_max=4095, b_min=0.0, b_max=1.0, clip=True),
                  EnsureTyped(["image", "label"], data_type="tensor", dtype=[torch.float32, torch.long],
                              track_meta=False)])
    ds = CacheDataset(records, tf, cache_rate=1.0, num_workers=workers, progress=False)
    dev = ctx.device
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=dev.type == "cuda", persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(ctx.seed))
    ctx.seed_everything()
    model = create_model(cfg.model, int(labels.max()) + 1, 1, raw.shape[-1], **cfg.model_kwargs).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    amp = cfg.amp and dev.type == "cuda"
    loss_fn = nn.CrossEntropyLoss()
    out = []
    for _ in range(cfg.epochs):
        model.train()
        wait = step = 0.0
        seen = 0
        t0 = time.perf_counter()
        for batch in loader:
            t1 = time.perf_counter()
            x, y = batch["image"].to(dev, non_blocking=True), batch["label"].to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            float(loss.detach())  # sync, as the real loop does
            seen += len(y)
            t0, wait, step = time.perf_counter(), wait + (t1 - t0), step + (time.perf_counter() - t1)
        out.append({"images_s": seen / (wait + step), "wait_s": wait, "step_s": step})
    return out


def bench_imageset(raw: np.ndarray, labels: np.ndarray, cfg: TrainConfig, ctx: RunContext) -> list[dict[str, float]]:
    """medunlearn.models.train.train_model on ImageSet tensors; per-epoch figures from its history."""
    imgs = torch.from_numpy(raw.astype(np.float32) / 4095.0)
    full = ImageSet(imgs, torch.from_numpy(labels))
    empty = full.subset([])
    k = int(labels.max()) + 1
    data = SplitData([f"c{i}" for i in range(k)], full, empty, empty, empty, empty, empty, {})
    _, info = train_model(data, cfg, ctx)
    n = (len(full) // cfg.batch_size) * cfg.batch_size
    return [{"images_s": n / (h["data_wait_s"] + h["step_s"]), "wait_s": h["data_wait_s"], "step_s": h["step_s"]}
            for h in info["history"]]


def summarise(name: str, epochs: list[dict[str, float]]) -> str:
    later = epochs[1:] or epochs  # epoch 1 includes warm-up (worker start, cudnn autotune)
    ips = np.mean([e["images_s"] for e in later])
    frac = sum(e["wait_s"] for e in later) / sum(e["wait_s"] + e["step_s"] for e in later)
    return f"| {name:<28} | {ips:>10.0f} | {100 * frac:>8.1f} % | {'yes' if frac < 0.10 else 'NO':>6} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="allcnn")
    p.add_argument("--width", type=int, default=None, help="model width option (allcnn / small_cnn)")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ctx = RunContext.create(seed=0, device=a.device)
    kwargs = {"width": a.width} if a.width else {}
    cfg = TrainConfig(model=a.model, model_kwargs=kwargs, epochs=a.epochs, batch_size=a.batch_size,
                      image_size=a.image_size)
    raw, labels = synthetic(a.n, a.image_size, a.classes, seed=0)
    print(f"device={ctx.device} model={a.model} {kwargs} n={a.n} size={a.image_size} batch={a.batch_size} "
          f"epochs={a.epochs} threads={torch.get_num_threads()} workers={a.workers}")
    print("| loader                       |   images/s | data wait | < 10 % |")
    print("|------------------------------|-----------:|----------:|-------:|")
    print(summarise(f"(a) MONAI CacheDataset w={a.workers}", bench_cachedataset(raw, labels, cfg, ctx, a.workers)))
    print(summarise("(b) ImageSet tensors", bench_imageset(raw, labels, cfg, ctx)))


if __name__ == "__main__":
    main()
