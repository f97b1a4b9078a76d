"""Training loop: accuracy on the tiny task, determinism, the retain-only reference, divergence."""
from __future__ import annotations

import math

import pytest
import torch

from medunlearn.data.imageset import ImageSet
from medunlearn.errors import ConfigError, DataError, DivergenceError
from medunlearn.evaluate.functional import model_accuracy
from medunlearn.models.checkpoint import load_checkpoint, save_checkpoint, state_distance
from medunlearn.models.train import TrainConfig, make_meta, train_model
from medunlearn.runtime import RunContext

FAST = dict(model="allcnn", model_kwargs={"width": 8}, epochs=3, batch_size=32)


def test_reaches_high_val_accuracy(tiny_split) -> None:
    model, info = train_model(tiny_split, TrainConfig(**FAST), RunContext(seed=0))
    assert info["best_val_acc"] > 80.0
    assert model_accuracy(model, tiny_split.val.images, tiny_split.val.labels) == pytest.approx(info["best_val_acc"])
    assert len(info["history"]) == 3 and info["n_train"] == len(tiny_split.train)
    assert info["history"][-1]["loss"] < info["history"][0]["loss"]
    assert info["best_epoch"] == max(range(1, 4), key=lambda e: (info["history"][e - 1]["val_acc"], e))
    assert info["wall_time_s"] > 0 and all(h["data_wait_s"] >= 0 and h["step_s"] > 0 for h in info["history"])
    assert not model.training


def test_deterministic_for_a_seed(tiny_split) -> None:
    cfg = TrainConfig(**{**FAST, "epochs": 2})
    a, ia = train_model(tiny_split, cfg, RunContext(seed=3))
    b, ib = train_model(tiny_split, cfg, RunContext(seed=3))
    c, _ = train_model(tiny_split, cfg, RunContext(seed=4))
    assert state_distance(a, b) == 0.0
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert [h["loss"] for h in ia["history"]] == [h["loss"] for h in ib["history"]]
    assert state_distance(a, c) > 0.0


def test_exclude_forget_uses_retain_only(tiny_split) -> None:
    cfg = TrainConfig(**{**FAST, "epochs": 2})
    ref, info = train_model(tiny_split, cfg, RunContext(seed=1), exclude_forget=True)
    assert info["n_train"] == len(tiny_split.train_retain) and info["exclude_forget"]
    assert info["n_val"] == len(tiny_split.val_retain)
    # scrambling the forget rows must not change the retrain reference at all
    f = tiny_split.train_forget
    tiny_split.train_forget = ImageSet(torch.rand_like(f.images), torch.zeros_like(f.labels), f.meta)
    ref2, _ = train_model(tiny_split, cfg, RunContext(seed=1), exclude_forget=True)
    assert state_distance(ref, ref2) == 0.0
    base, _ = train_model(tiny_split, cfg, RunContext(seed=1))
    assert state_distance(ref, base) > 0.0


def test_nan_input_raises_divergence(tiny_split) -> None:
    tiny_split.train_retain.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="Expected a finite training loss"):
        train_model(tiny_split, TrainConfig(**{**FAST, "batch_size": 1000}), RunContext())


def test_empty_retain_set(tiny_split) -> None:
    tiny_split.train_retain = tiny_split.train_retain.subset([])
    with pytest.raises(DataError, match="retain set is empty"):
        train_model(tiny_split, TrainConfig(**FAST), RunContext(), exclude_forget=True)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match='Did you mean "epochs"'):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="epochs >= 1"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ConfigError, match="an integer"):
        TrainConfig(epochs=2.5).validate()
    with pytest.raises(ConfigError, match=r"momentum in \[0, 1\)"):
        TrainConfig(momentum=1.0).validate()
    with pytest.raises(ConfigError, match="lr > 0"):
        TrainConfig(lr=0.0).validate()
    assert TrainConfig.from_dict({"epochs": 2}).epochs == 2


def test_make_meta_round_trips(tiny_split, tmp_path) -> None:
    tiny_split.info.update(cohort_hash="c" * 64, split_hash="s" * 64)
    cfg = TrainConfig(**{**FAST, "epochs": 1})
    model, info = train_model(tiny_split, cfg, RunContext(seed=5), exclude_forget=True)
    meta = make_meta("retrain", cfg, tiny_split, info, model)
    for key in ("kind", "architecture", "class_names", "image_size", "in_channels", "config", "seed",
                "code_version", "cohort_hash", "split_hash", "rule", "wall_time_s", "changelog"):
        assert key in meta
    assert meta["kind"] == "retrain" and meta["seed"] == 5 and meta["image_size"] == 16
    assert meta["config"]["exclude_forget"] is True and meta["rule"] == "device = ScannerX"
    save_checkpoint(tmp_path / "ref", model, meta)
    loaded, meta2 = load_checkpoint(tmp_path / "ref")
    assert meta2["cohort_hash"] == "c" * 64 and math.isclose(meta2["wall_time_s"], info["wall_time_s"])
    x = tiny_split.val.images[:8]
    assert torch.equal(loaded(x), model(x))
