"""Contract tests over every registered model: a new model is tested without a new test."""
from __future__ import annotations

import os

import pytest
import torch

from medunlearn.errors import ConfigError
from medunlearn.models.checkpoint import load_checkpoint, save_checkpoint
from medunlearn.models.zoo import MODELS, create_model, list_models, model_from_arch, parameter_subset

HEAVY_3D = ("densenet121", "resnet18")  # millions of 3D weights: skipped unless asked for


@pytest.fixture(params=MODELS.names())
def name(request) -> str:
    return request.param


def test_builds_and_forwards(name: str) -> None:
    torch.manual_seed(0)
    m = create_model(name, num_classes=4, in_channels=1, image_size=32)
    m.train()
    out = m(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 4)
    assert torch.isfinite(out).all()
    assert m.features(torch.rand(2, 1, 32, 32)).shape == (2, m.head.in_features)
    assert isinstance(m.head, torch.nn.Linear) and m.head.out_features == 4


def test_normalisation_is_the_first_feature_op(name: str) -> None:
    m = create_model(name, 3, image_size=32).eval()
    first_name, first = next(iter(m.features.named_children()))
    assert first_name == "normalize"
    x = torch.full((1, 1, 4, 4), 0.75)
    assert torch.allclose(first(x), torch.ones_like(x))  # (0.75 - 0.5) / 0.25


def test_round_trip_identical_logits(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    m = create_model(name, 3, image_size=32)
    m.train()
    m(torch.rand(2, 1, 32, 32))  # move BN running stats away from their init
    m.eval()
    x = torch.rand(2, 1, 32, 32)
    save_checkpoint(tmp_path / "ck", m, {"kind": "base"})
    m2, meta = load_checkpoint(tmp_path / "ck")
    assert meta["architecture"]["name"] == name
    assert torch.equal(m(x), m2(x))


def test_blocks_and_subsets_consistent(name: str) -> None:
    m = create_model(name, 3, image_size=32)
    blocks = m.block_names()
    assert blocks[-1] == "head" and len(blocks) == len(set(blocks)) >= 3
    all_names = [n for n, _ in parameter_subset(m, "all")]
    assert all_names == [n for n, _ in m.named_parameters()]
    assert [n for n, _ in parameter_subset(m, "head")] == ["head.weight", "head.bias"]
    assert parameter_subset(m, "last-1") == parameter_subset(m, "head")
    sizes = [len(parameter_subset(m, f"last-{k}")) for k in range(1, len(blocks) + 1)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)  # each block adds parameters
    assert sizes[-1] == len(all_names)  # all blocks together cover every parameter
    with pytest.raises(ConfigError, match="Expected"):
        parameter_subset(m, f"last-{len(blocks) + 1}")


def test_model_from_arch_rebuilds(name: str) -> None:
    m = create_model(name, 5, in_channels=2, image_size=32)
    m2 = model_from_arch(m.arch)
    assert [(k, v.shape) for k, v in m.state_dict().items()] == [(k, v.shape) for k, v in m2.state_dict().items()]


def test_bad_names_and_options() -> None:
    with pytest.raises(ConfigError, match='Did you mean "allcnn"'):
        create_model("allcn", 3)
    with pytest.raises(ConfigError, match='Did you mean "width"'):
        create_model("allcnn", 3, widht=8)
    with pytest.raises(ConfigError, match="Expected at least 2 classes"):
        create_model("small_cnn", 1)
    m = create_model("small_cnn", 3)
    for bad in ("last", "last-0", "tail", "last-x"):
        with pytest.raises(ConfigError, match="Expected a parameter subset"):
            parameter_subset(m, bad)


def test_allcnn_width_and_channel_plan() -> None:
    m = create_model("allcnn", 3)
    convs = [mod for mod in m.features.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 64]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1]
    small = create_model("allcnn", 3, width=8)
    assert small.head.in_features == 16


def test_custom_normalisation_is_stored() -> None:
    m = create_model("small_cnn", 3, mean=0.2, std=0.1)
    assert m.arch["kwargs"]["mean"] == 0.2
    m2 = model_from_arch(m.arch)
    assert float(m2.features.normalize.std) == pytest.approx(0.1)


def test_list_models_counts_parameters() -> None:
    rows = {name: (desc, n) for name, desc, n in list_models()}
    assert set(rows) == set(MODELS.names())
    assert rows["small_cnn"][1] < rows["allcnn"][1] < rows["resnet10"][1] < rows["resnet18"][1]
    assert all(desc and "\n" not in desc for desc, _ in rows.values())


def test_volumes_forward_and_round_trip(name: str, tmp_path) -> None:
    """Every model builds for spatial_dims=3, records it, and reloads to identical logits."""
    if name in HEAVY_3D and not os.environ.get("MEDUNLEARN_HEAVY_TESTS"):
        pytest.skip("full-size 3D net: minutes on a shared CPU (set MEDUNLEARN_HEAVY_TESTS=1)")
    torch.manual_seed(2)
    m = create_model(name, 3, image_size=32, spatial_dims=3)
    assert m.spatial_dims == 3 and m.arch["kwargs"]["spatial_dims"] == 3
    m.train()
    m(torch.rand(2, 1, 32, 32, 32))
    m.eval()
    x = torch.rand(2, 1, 32, 32, 32)
    out = m(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    save_checkpoint(tmp_path / "ck3", m, {"kind": "base"})
    m2, meta = load_checkpoint(tmp_path / "ck3")
    assert meta["spatial_dims"] == 3 and m2.spatial_dims == 3
    assert torch.equal(out, m2(x))
    convs = [mod for mod in m.features.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(isinstance(c, torch.nn.Conv3d) for c in convs)


def test_spatial_dims_validation_and_defaults() -> None:
    from medunlearn.models.zoo import DEFAULT_MODELS, default_model

    with pytest.raises(ConfigError, match="spatial_dims 2"):
        create_model("small_cnn", 3, spatial_dims=4)
    assert default_model(2) == "allcnn" and default_model(3) == DEFAULT_MODELS[3] in MODELS.names()
    assert "spatial_dims" not in create_model("small_cnn", 3).arch["kwargs"]  # 2D records unchanged
    with pytest.raises(ConfigError):
        default_model(1)
