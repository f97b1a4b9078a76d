"""Contract tests over every registered model: a new model is tested without a new test."""
from __future__ import annotations

import pytest
import torch

from medunlearn.errors import ConfigError
from medunlearn.models.checkpoint import load_checkpoint, save_checkpoint
from medunlearn.models.zoo import MODELS, create_model, list_models, model_from_arch, parameter_subset


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
