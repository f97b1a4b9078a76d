"""Train and forget throughput (images/s) on the compute device: CUDA with AMP when lent a GPU, else CPU.

Synthetic tensors (no decoding), so the numbers are the model + loop speed: train_model for --epochs, then
PSG and FAMR on the same data (ScannerX-like forget set = a quarter of the train set). 2D and 3D.

    python benchmarks/gpu_throughput.py --torch-device cuda --n 8192 --image-size 64 --model allcnn
    python benchmarks/gpu_throughput.py --torch-device cuda --dims 3 --n 1024 --image-size 32
"""
from __future__ import annotations

import argparse
import time

import torch

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.models.train import TrainConfig, train_model
from medunlearn.runtime import RunContext


def tensors(n: int, size: int, dims: int, seed: int, marker: bool) -> ImageSet:
    """Class = which half of the first spatial axis is bright; `marker` stamps a corner (the device shortcut)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.2 + 0.1 * torch.rand(n, 1, *(size,) * dims, generator=g)
    for k in range(3):
        sel = y == k
        x[sel, :, k * size // 3:(k + 1) * size // 3] += 0.5
    if marker:
        x[(slice(None), slice(None)) + (slice(0, 3),) * dims] = 1.0
    return ImageSet(x.clamp(0, 1), y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dims", type=int, default=2, choices=[2, 3])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--model", default="")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--methods", nargs="+", default=["psg", "famr"])
    args = ap.parse_args()
    n, s, d = args.n, args.image_size, args.dims
    data = SplitData(["a", "b", "c"], tensors(n * 3 // 4, s, d, 1, False), tensors(n // 4, s, d, 2, True),
                     tensors(n // 8, s, d, 3, False), tensors(n // 16, s, d, 4, True),
                     tensors(n // 8, s, d, 5, False), tensors(n // 16, s, d, 6, True), info={"rule": "marker"})
    ctx = RunContext.create(seed=0, device=args.torch_device)
    cfg = TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, image_size=s)
    model, info = train_model(data, cfg, ctx)
    hist = info["history"][1:] or info["history"]  # epoch 1 includes cudnn autotuning / warm-up
    step = sum(h["step_s"] + h["data_wait_s"] for h in hist)
    wait = sum(h["data_wait_s"] for h in hist)
    print(f"device={ctx.device} amp={info['amp']} model={model.arch['name']} dims={d} size={s}")
    print(f"{'phase':>8} {'images':>8} {'seconds':>9} {'images/s':>10} {'data wait %':>11}")
    print(f"{'train':>8} {len(hist) * len(data.train):>8} {step:>9.2f} {len(hist) * len(data.train) / step:>10.0f} "
          f"{100 * wait / step:>10.1f}%")
    from medunlearn.unlearn import METHODS

    for name in args.methods:
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        METHODS.get(name)().run(model, data, ctx)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        seen = len(data.train_forget) + len(data.train_retain)
        print(f"{name:>8} {seen:>8} {dt:>9.2f} {seen / dt:>10.0f} {'-':>11}")


if __name__ == "__main__":
    main()
