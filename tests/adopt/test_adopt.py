"""Adoption of each family; preprocessing equality; membership; the adopted checkpoint works downstream."""
from __future__ import annotations

import json

import pytest
import torch

from medunlearn.adopt.networks import adopt_network, build_reference
from medunlearn.adopt.resolver import Component
from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.models.checkpoint import load_checkpoint
from medunlearn.models.intensity import Intensity
from medunlearn.models.zoo import parameter_subset
from medunlearn.workflow.steps_adopt import adopt, adopt_in_memory
from tests.adopt.factory import endoscopic_bundle, rgb_cohort, synthetic_cohort, template_bundle

KEYS = {"source_kind", "source_sha256", "source_files", "key_map", "container", "head", "preprocessing",
        "fidelity", "membership"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return synthetic_cohort(tmp_path_factory.mktemp("cohort"), n_patients=4)


@pytest.mark.parametrize("wrapper,ddp", [(None, False), ("model", True), ("state_dict", False)])
def test_template_bundle_adopts_and_reloads(tmp_path, cohort, wrapper, ddp):
    b = template_bundle(tmp_path / "b", wrapper=wrapper, ddp=ddp)
    meta = adopt(b, cohort[1], tmp_path / "base", membership="unknown")
    a = meta["adoption"]
    assert set(a) == KEYS
    assert a["container"] == {"wrapper": wrapper, "prefix": "module." if ddp else ""}
    assert a["fidelity"]["passed"] and a["fidelity"]["max_prob_diff"] <= 1e-4
    assert a["key_map"]["head.weight"] == "class_layers.out.weight"
    assert a["key_map"]["features.conv0.weight"] == "features.conv0.weight"
    model, m2 = load_checkpoint(tmp_path / "base")  # an ordinary checkpoint
    assert m2["preprocessing"]["intensity"]["name"] == "ScaleIntensity"
    assert len(parameter_subset(model, "last-2")) > 0  # blocks exist for last-N / CF-k / EU-k


def test_sigmoid_head_maps_to_two_logits(tmp_path, cohort):
    b = template_bundle(tmp_path / "b", sigmoid=True)
    df = cohort[0].assign(label=["absent", "present"] * (len(cohort[0]) // 2) + ["absent"] * (len(cohort[0]) % 2))
    model, meta = adopt_in_memory(b, df, membership="unknown")
    assert meta["adoption"]["head"] == {"kind": "sigmoid1"}
    assert model.num_classes == 2 and float(model.head.weight[0].detach().abs().sum()) == 0.0


def test_rgb_seresnet_normalize_nonzero_channelwise(tmp_path):
    df = rgb_cohort(tmp_path / "rgb")
    model, meta = adopt_in_memory(endoscopic_bundle(tmp_path / "b"), df, membership="unknown")
    pre = meta["preprocessing"]
    assert pre["intensity"]["name"] == "NormalizeIntensity" and pre["intensity_in"] == "model"
    assert pre["pixel_map"] == {"scale": 256.0, "offset": 0.0} and pre["in_channels"] == 3
    assert meta["adoption"]["fidelity"]["max_prob_diff"] <= 1e-4


def test_intensity_slot_equals_monai_normalize():
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange

    x = torch.rand(3, 3, 8, 8) * 200
    x[:, :, :2] = 0
    slot = Intensity({"name": "NormalizeIntensity", "nonzero": True, "channel_wise": True, "scale": 256.0})
    want = torch.stack([torch.as_tensor(NormalizeIntensity(nonzero=True, channel_wise=True)(v)) for v in x])
    assert torch.allclose(slot(x / 256.0), want, atol=1e-5)
    slot = Intensity({"name": "ScaleIntensityRange", "a_min": -100.0, "a_max": 100.0, "b_min": 0.0, "b_max": 1.0,
                      "clip": True, "scale": 512.0, "offset": -256.0})
    y = torch.randn(2, 1, 6, 6) * 150
    want = torch.as_tensor(ScaleIntensityRange(-100, 100, 0, 1, clip=True)(y))
    assert torch.allclose(slot((y + 256.0) / 512.0), want, atol=1e-5)


@pytest.mark.parametrize("name,args", [
    ("resnet18", {"spatial_dims": 2, "n_input_channels": 1, "num_classes": 3, "widen_factor": 0.125}),
    ("EfficientNetBN", {"model_name": "efficientnet-b0", "spatial_dims": 2, "in_channels": 1, "num_classes": 3}),
    ("DenseNet169", {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "init_features": 4, "growth_rate": 2}),
])
def test_families_wrap_exactly(name, args):
    comp = Component(name, args)
    torch.manual_seed(0)
    ref = build_reference(comp, build_reference(comp, {}).state_dict() if False else _random_state(comp))
    model, kmap = adopt_network(comp, ref.state_dict(), "softmax", 32, {"name": "identity"})
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)
    assert set(kmap.values()) <= set(ref.state_dict())


def _random_state(comp):
    from medunlearn.adopt.networks import full_args
    from medunlearn.models.zoo import build_monai_network

    return build_monai_network(comp.name, full_args(comp)).state_dict()


def test_multilabel_and_membership_required(tmp_path, cohort):
    cfgless = template_bundle(tmp_path / "b")
    with pytest.raises(ConfigError, match="membership unknown"):
        adopt_in_memory(cfgless, cohort[1])


def test_datalist_membership(tmp_path, cohort):
    df = cohort[0]
    paths = [str(p) for p in df["path"]]
    dl = tmp_path / "datalist.json"
    dl.write_text(json.dumps({"training": [{"image": p} for p in paths[:4]],
                              "validation": [{"image": "elsewhere/" + "/".join(paths[4].split("/")[-3:])}],
                              "test": [{"image": "missing/nothere.dcm"}]}))
    _, meta = adopt_in_memory(template_bundle(tmp_path / "b"), df, datalist=dl)
    m = meta["adoption"]["membership"]
    assert m["splits"]["training"] == {"entries": 4, "matched": 4}
    assert m["splits"]["validation"]["matched"] == 1 and m["unmatched_entries"] == 1
    assert m["cohort_rows"]["unseen"] == len(df) - 5


def test_pickle_model_pt_refused(tmp_path, cohort):
    from tests.adopt.factory import hostile_bundle

    with pytest.raises(CheckpointError, match="weights_only"):
        adopt_in_memory(hostile_bundle(tmp_path / "b", "pickle"), cohort[1], membership="unknown")
