"""Training on volumes: the 3D default model, meta records spatial_dims, AMP settings stay off on CPU."""
from __future__ import annotations

import torch

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.models.train import TrainConfig, _amp_settings, make_meta, train_model
from medunlearn.models.zoo import DEFAULT_MODELS
from medunlearn.runtime import RunContext


def tiny_volumes(n: int = 48, size: int = 16, seed: int = 0) -> SplitData:
    """Two classes: a bright cube in the front or the back half of the volume."""
    g = torch.Generator().manual_seed(seed)

    def part(k: int) -> ImageSet:
        y = torch.randint(0, 2, (k,), generator=g)
        x = 0.2 + 0.05 * torch.rand(k, 1, size, size, size, generator=g)
        for i in range(k):
            z0 = 1 if y[i] == 0 else size // 2 + 1
            x[i, 0, z0:z0 + size // 3, 3:size - 3, 3:size - 3] = 0.9
        return ImageSet(x, y)

    return SplitData(["front", "back"], part(n), part(n // 4), part(n // 2), part(n // 4), part(n // 2),
                     part(n // 4), info={"cohort_hash": "c", "split_hash": "s"})


def test_trains_a_3d_default_model_and_records_dims() -> None:
    data = tiny_volumes()
    assert data.spatial_dims == 3 and data.in_shape == (1, 16, 16, 16)
    cfg = TrainConfig(epochs=6, batch_size=16, lr=0.05)
    model, info = train_model(data, cfg, RunContext(seed=0))
    assert model.arch["name"] == DEFAULT_MODELS[3] and model.spatial_dims == 3
    assert info["best_val_acc"] >= 90.0
    meta = make_meta("base", cfg, data, info, model)
    assert meta["spatial_dims"] == 3 and meta["image_size"] == 16 and meta["config"]["model"] == DEFAULT_MODELS[3]


def test_amp_only_on_cuda() -> None:
    assert _amp_settings(TrainConfig(amp=True), torch.device("cpu")) == (False, torch.float32)
    assert _amp_settings(TrainConfig(amp=False), torch.device("cuda")) == (False, torch.float32)
