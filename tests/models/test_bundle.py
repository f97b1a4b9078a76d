"""MONAI bundle export: layout, metadata fields, and a weights_only reload with identical logits."""
from __future__ import annotations

import json

import pytest
import torch

from medunlearn.errors import OutputExistsError
from medunlearn.models.bundle import export_bundle, load_bundle
from medunlearn.models.checkpoint import save_checkpoint
from medunlearn.models.zoo import create_model


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    m = create_model("allcnn", 3, image_size=16, width=4)
    m.train()
    m(torch.rand(4, 1, 16, 16))
    m.eval()
    meta = {"kind": "unlearned", "class_names": ["normal", "benign", "malignant"], "rule": "device = ScannerX",
            "metrics": {"forget_acc": 33.3, "test_acc": 91.0, "note": "x"},
            "changelog": [{"method": "psg", "rule": "device = ScannerX", "metrics": {"forget_acc": 33.3}},
                          {"method": "famr", "rule": "site = SiteB", "metrics": {"forget_acc": 40.0}}]}
    return m, save_checkpoint(tmp_path / "ck", m, meta)


def test_bundle_layout_and_metadata(ckpt, tmp_path) -> None:
    _, ck = ckpt
    out = export_bundle(ck, tmp_path / "bundle")
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md"):
        assert (out / rel).is_file(), rel
    md = json.loads((out / "configs/metadata.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description", "authors",
                "copyright", "license", "network_data_format", "changelog", "intended_use", "eval_metrics"):
        assert key in md, key
    assert md["monai_version"] == __import__("monai").__version__
    image = md["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [16, 16] and image["value_range"] == [0, 1]
    pred = md["network_data_format"]["outputs"]["pred"]
    assert pred["type"] == "probabilities" and pred["num_channels"] == 3 and pred["channel_def"]["2"] == "malignant"
    assert list(md["changelog"]) == ["0.3.0", "0.2.0", "0.1.0"] and md["version"] == "0.3.0"
    assert "famr" in md["changelog"]["0.3.0"] and "forget_acc=33.3" in md["changelog"]["0.2.0"]
    assert md["eval_metrics"] == {"forget_acc": 33.3, "test_acc": 91.0}
    inference = (out / "configs/inference.json").read_text()
    assert "$" not in inference and "_target_" not in inference
    assert "malignant" in (out / "docs/README.md").read_text()


def test_bundle_weights_reload_identical(ckpt, tmp_path) -> None:
    m, ck = ckpt
    out = export_bundle(ck, tmp_path / "bundle")
    fresh = create_model("allcnn", 3, image_size=16, width=4)
    fresh.load_state_dict(torch.load(out / "models/model.pt", weights_only=True))
    fresh.eval()
    x = torch.rand(5, 1, 16, 16)
    assert torch.equal(fresh(x), m(x))
    assert torch.equal(load_bundle(out)(x), m(x))


def test_bundle_refuses_overwrite(ckpt, tmp_path) -> None:
    _, ck = ckpt
    export_bundle(ck, tmp_path / "bundle")
    with pytest.raises(OutputExistsError):
        export_bundle(ck, tmp_path / "bundle")
    export_bundle(ck, tmp_path / "bundle", overwrite=True)
