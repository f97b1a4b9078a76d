"""TorchScript and state-dict sources, --expected predictions, the membership-driven split, --model SRC."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from medunlearn.errors import ConfigError
from medunlearn.selection.split import membership_split, select
from medunlearn.workflow.steps_adopt import adopt_in_memory
from tests.adopt.factory import synthetic_cohort, template_bundle, template_config

PRE = [{"_target_": "LoadImaged", "keys": "image", "reader": "PydicomReader"},
       {"_target_": "EnsureChannelFirstd", "keys": "image"}, {"_target_": "ScaleIntensityd", "keys": "image"}]
ARCH = {"network": "DenseNet121", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": 3,
                                           "init_features": 4, "growth_rate": 4}}
NAMES = ["normal", "cyst", "mass"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return synthetic_cohort(tmp_path_factory.mktemp("cohort"), n_patients=4)


def test_state_dict_with_arch(tmp_path, cohort):
    b = template_bundle(tmp_path / "b")
    with pytest.raises(ConfigError, match="preprocessing"):
        adopt_in_memory(b / "models" / "model.pt", cohort[1], arch=ARCH, class_names=NAMES, membership="unknown")
    model, meta = adopt_in_memory(b / "models" / "model.pt", cohort[1], arch=ARCH, preprocessing=PRE,
                                  class_names=NAMES, membership="unknown")
    assert meta["adoption"]["source_kind"] == "state_dict" and meta["adoption"]["fidelity"]["passed"]


def test_torchscript_with_embedded_config(tmp_path, cohort):
    from monai.networks.nets import DenseNet121

    torch.manual_seed(1)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3, init_features=4, growth_rate=4).eval()
    ts = torch.jit.script(net)
    cfg = template_config()
    cfg["network_def"]["out_channels"] = 3
    torch.jit.save(ts, str(tmp_path / "model.ts"), _extra_files={"inference.json": json.dumps(cfg)})
    before = (tmp_path / "model.ts").read_bytes()
    _, meta = adopt_in_memory(tmp_path / "model.ts", cohort[1], class_names=NAMES, membership="unknown")
    assert meta["adoption"]["source_kind"] == "torchscript" and meta["adoption"]["fidelity"]["passed"]
    assert (tmp_path / "model.ts").read_bytes() == before  # inputs never modified


def test_expected_predictions_checked(tmp_path, cohort):
    b = template_bundle(tmp_path / "b")
    model, meta = adopt_in_memory(b, cohort[1], membership="unknown")
    df = cohort[0]
    from medunlearn.adopt.fidelity import sample_rows
    from medunlearn.data.datasets import load_images

    rows = sample_rows(df, NAMES, 4)
    x, _ = load_images(rows, NAMES, 32, preprocessing=meta["preprocessing"])
    p = torch.softmax(model(x), 1).detach()
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("".join(f"{f},{','.join(f'{v:.6f}' for v in r)}\n" for f, r in zip(rows["path"], p.tolist())))
    bad.write_text("".join(f"{f},0.98,0.01,0.01\n" for f in rows["path"]))
    _, m2 = adopt_in_memory(b, cohort[1], membership="unknown", expected=good)
    assert m2["adoption"]["fidelity"]["expected"]["matched"] == len(rows)
    from medunlearn.errors import CheckpointError

    with pytest.raises(CheckpointError, match="predictions.csv"):
        adopt_in_memory(b, cohort[1], membership="unknown", expected=bad)


def test_membership_split_from_datalist():
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(8)], "patient": [f"p{k // 2}" for k in range(8)],
                       "label": ["a", "b"] * 4, "device": "D"})
    rows = {"i0": "training", "i1": "training", "i2": "training", "i3": "training"}
    split = membership_split(df, rows)
    assert (split[:4] == "train").all() and set(split[4:]) <= {"val", "test"} and "val" in set(split[4:])
    sel = select(df, None, membership={**rows, "i4": "validation"})
    assert sel.split_source == "membership" and list(sel.split[sel.split == "val"].index) == [4]
    assert set(sel.split[5:]) == {"test"}  # unseen rows: held out from the deployed model


def test_forget_equivalence_refused_when_membership_unknown(tmp_path, cohort):
    from medunlearn.selection.parse import build_rule
    from medunlearn.workflow.steps_forget import forget

    b = template_bundle(tmp_path / "b")
    with pytest.raises(ConfigError, match="--reference"):
        forget(cohort[1], b, build_rule(device="ScannerX"), tmp_path / "run", goal="equivalence",
               adopt_options={"membership": "unknown"})
    with pytest.raises(ConfigError, match="membership unknown"):
        forget(cohort[1], b, build_rule(device="ScannerX"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cache_key_includes_preprocessing(tmp_path, cohort):
    from medunlearn.data.cache import keyed_records

    rec = [{"image": str(cohort[0]["path"].iloc[0])}]
    a = keyed_records(rec, {"preprocessing": {"pixel_map": {"scale": 1.0}}}, tmp_path)[0]["cache_key"]
    b = keyed_records(rec, {"preprocessing": {"pixel_map": {"scale": 2.0}}}, tmp_path)[0]["cache_key"]
    assert a != b
