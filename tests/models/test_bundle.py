"""MONAI bundle export: layout, metadata (schema fields, changelog per policy, acceptance), TorchScript, reload."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medunlearn.errors import CheckpointError, OutputExistsError
from medunlearn.models.bundle import export_bundle, load_bundle, spatial_dims_of, to_torchscript
from medunlearn.models.bundle_config import EXPRESSIONS
from medunlearn.models.checkpoint import save_checkpoint
from medunlearn.models.zoo import MODELS, create_model

CLASSES = ["normal", "benign", "malignant"]
ACCEPT = {"met": False, "goal": "suppression", "judged_on": "validation",
          "criteria": {"forget_target": 33.33, "forget_tol": 5.0},
          "checks": [{"name": "forget_accuracy", "label": "held-out forget-domain accuracy", "value": 31.2,
                      "op": "within", "threshold": [28.33, 38.33], "unit": "%", "passed": True},
                     {"name": "forget_confidence", "label": "mean max-softmax", "value": 51.0, "op": "<=",
                      "threshold": 43.33, "unit": "%", "passed": False}],
          "state": "closest (criteria not met)", "reason": "budget reached", "trace_file": "trace.csv"}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model("allcnn", 3, image_size=16, width=4)
    m.train()
    m(torch.rand(4, 1, 16, 16))  # non-trivial BatchNorm statistics
    return m.eval()


@pytest.fixture
def ckpt(tmp_path):
    m = _model()
    meta = {"kind": "unlearned", "class_names": CLASSES, "rule": {"field": "device", "value": "ScannerX"},
            "rule_text": "device = ScannerX", "method": "psg", "goal": "suppression", "synthetic": True,
            "metrics": {"forget_acc": 33.3, "test_acc": 91.0, "note": "x", "mia": None, "auroc": float("nan")},
            "changelog": [{"policy": "device = ScannerX", "method": "psg", "metrics": {"forget_acc": 33.3}}]}
    return m, save_checkpoint(tmp_path / "ck", m, meta)


def _metadata(out) -> dict:
    return json.loads((out / "configs/metadata.json").read_text())


def test_bundle_layout_and_monai_metadata(ckpt, tmp_path) -> None:
    _, ck = ckpt
    (ck / "metrics.json").write_text(json.dumps({"acceptance": ACCEPT}))
    out = export_bundle(ck, tmp_path / "bundle")
    for rel in ("configs/metadata.json", "configs/inference.json", "configs/medunlearn_meta.json", "models/model.pt",
                "models/model.ts", "docs/README.md"):
        assert (out / rel).is_file(), rel
    md = _metadata(out)
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "task", "description", "authors", "copyright", "network_data_format"):
        assert md[key], key
    assert md["monai_version"] == __import__("monai").__version__
    assert "ignite" not in md["required_packages_version"] and "pytorch-ignite" in md["required_packages_version"]
    image = md["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [16, 16] and image["value_range"] == [0, 1]
    assert "grey" in image["channel_def"]["0"]
    pred = md["network_data_format"]["outputs"]["pred"]
    assert pred["type"] == "probabilities" and pred["num_channels"] == 3 and pred["channel_def"]["2"] == "malignant"
    assert md["eval_metrics"] == {"forget_acc": 33.3, "test_acc": 91.0}
    assert md["task"] == "3-class 2D medical image classification" and "SYNTHETIC" in md["description"]
    # one changelog version for the trained model, one per policy; newest first
    assert list(md["changelog"]) == ["0.2.0", "0.1.0"] and md["version"] == "0.2.0"
    assert "device = ScannerX" in md["changelog"]["0.2.0"] and "not met" in md["changelog"]["0.2.0"]
    acc = md["acceptance"]
    assert acc["status"] == "not met" and acc["met"] is False
    (policy,) = acc["policies"]
    assert policy["policy"] == "device = ScannerX" and policy["judged_on"] == "validation"
    assert [c["passed"] for c in policy["checks"]] == [True, False] and policy["checks"][1]["threshold"] == 43.33
    readme = (out / "docs/README.md").read_text()
    assert "malignant" in readme and "python -m monai.bundle run" in readme and "not met" in readme


def test_inference_config_follows_monai_conventions(ckpt, tmp_path) -> None:
    _, ck = ckpt
    cfg = json.loads((export_bundle(ck, tmp_path / "bundle") / "configs/inference.json").read_text())
    for key in ("imports", "bundle_root", "device", "network_def", "network", "preprocessing", "dataset", "inferer",
                "postprocessing", "evaluator", "run"):
        assert key in cfg, key
    assert cfg["network_def"]["_target_"] == "torch.jit.load"
    assert cfg["medunlearn_network_def"] == {"_target_": "medunlearn.models.zoo.create_model", "name": "allcnn",
                                             "num_classes": 3, "in_channels": 1, "image_size": 16, "width": 4}
    names = [t["_target_"].rsplit(".", 1)[1] for t in cfg["preprocessing"]["transforms"]]
    assert names[:4] == ["LoadImaged", "EnsureChannelFirstd", "ScaleIntensityd", "Resized"]
    assert cfg["preprocessing"]["transforms"][3]["spatial_size"] == [16, 16]
    dollar = [v for v in json.dumps(cfg).split('"') if v.startswith("$")]
    assert dollar and all(v.encode().decode("unicode_escape") in EXPRESSIONS for v in dollar)


def test_acceptance_absent_reads_not_evaluated(tmp_path) -> None:
    ck = save_checkpoint(tmp_path / "ck", _model(), {"kind": "unlearned", "class_names": CLASSES,
                                                      "rule_text": "site = SiteB", "method": "famr"})
    md = _metadata(export_bundle(ck, tmp_path / "bundle"))
    assert md["acceptance"]["status"] == "not evaluated" and md["acceptance"]["met"] is None
    assert md["acceptance"]["policies"] == [{"policy": "site = SiteB", "status": "not evaluated", "met": None}]
    assert "acceptance: not evaluated" in md["changelog"]["0.2.0"]
    base = save_checkpoint(tmp_path / "base", _model(), {"kind": "base", "class_names": CLASSES})
    md = _metadata(export_bundle(base, tmp_path / "bundle_base"))
    assert list(md["changelog"]) == ["0.1.0"] and md["acceptance"]["policies"] == []


def test_merged_bundle_has_one_version_and_verdict_per_policy(tmp_path) -> None:
    runs = [{"path": "runs/a", "sha256": "aa" * 32, "rule_text": "device = ScannerX", "method": "psg",
             "goal": "suppression"},
            {"path": "runs/b", "sha256": "bb" * 32, "rule_text": "site = SiteB", "method": "famr", "goal": "suppression"}]
    acceptance = {"met": False, "retain": {"value": 96.0, "passed": True},
                  "policies": [{"policy": "site = SiteB", "run_sha256": "bb" * 32, "met": False, "checks": []},
                               {"policy": "device = ScannerX", "run_sha256": "aa" * 32, "met": True, "checks": []}]}
    meta = {"kind": "merged", "class_names": CLASSES, "merge": {"method": "ties", "runs": runs},
            "acceptance": acceptance, "changelog": [{"kind": "merged", "method": "ties"}]}
    md = _metadata(export_bundle(save_checkpoint(tmp_path / "m", _model(), meta), tmp_path / "bundle"))
    assert list(md["changelog"]) == ["0.4.0", "0.3.0", "0.2.0", "0.1.0"]
    assert "merged 2 unlearning policies" in md["changelog"]["0.4.0"] and "ties" in md["changelog"]["0.4.0"]
    assert "device = ScannerX" in md["changelog"]["0.2.0"] and "acceptance: met" in md["changelog"]["0.2.0"]
    assert "site = SiteB" in md["changelog"]["0.3.0"] and "acceptance: not met" in md["changelog"]["0.3.0"]
    assert [(p["policy"], p["status"]) for p in md["acceptance"]["policies"]] == [
        ("device = ScannerX", "met"), ("site = SiteB", "not met")]
    assert md["acceptance"]["status"] == "not met" and md["acceptance"]["retain"]["passed"] is True


def test_user_text_cannot_become_a_monai_expression(tmp_path) -> None:
    """Class names and rule text land in metadata.json, which MONAI parses: a leading $ must stay text."""
    names = ["$__import__('os').system('touch pwned')", "@evaluator", "plain"]
    ck = save_checkpoint(tmp_path / "ck", _model(), {"kind": "unlearned", "class_names": names,
                                                      "rule_text": "%/etc/passwd", "method": "psg"})
    md = _metadata(export_bundle(ck, tmp_path / "bundle"))
    channel_def = md["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channel_def == {"0": " " + names[0], "1": " @evaluator", "2": "plain"}
    assert md["acceptance"]["policies"][0]["policy"] == " %/etc/passwd"
    assert isinstance(load_bundle(tmp_path / "bundle"), torch.nn.Module)  # passes medunlearn's own checks


def test_weights_and_torchscript_reproduce_the_checkpoint(ckpt, tmp_path) -> None:
    m, ck = ckpt
    out = export_bundle(ck, tmp_path / "bundle")
    fresh = create_model("allcnn", 3, image_size=16, width=4)
    fresh.load_state_dict(torch.load(out / "models/model.pt", weights_only=True))
    fresh.eval()
    x = torch.rand(5, 1, 16, 16)
    assert torch.equal(fresh(x), m(x))
    assert torch.equal(load_bundle(out)(x), m(x))
    extra = {"metadata.json": "", "inference.json": ""}
    ts = torch.jit.load(str(out / "models/model.ts"), _extra_files=extra)
    assert torch.allclose(ts(x), m(x), atol=1e-5)
    assert json.loads(extra["metadata.json"])["version"] == _metadata(out)["version"]
    assert json.loads(extra["inference.json"])["network_def"]["_target_"] == "torch.jit.load"


# scripting DenseNet121 takes ~10 s on a busy CPU
_ZOO = [pytest.param(n, marks=pytest.mark.slow) if n == "densenet121" else n for n in MODELS.names()]


@pytest.mark.parametrize("name", _ZOO)
def test_every_zoo_model_exports_to_torchscript(name) -> None:
    m = create_model(name, 3, 1, 32).eval()
    ts, how = to_torchscript(m, torch.rand(2, 1, 32, 32))
    y = torch.rand(3, 1, 32, 32)  # another batch size: scripting keeps no traced shapes
    assert how == "script" and torch.allclose(ts(y), m(y), atol=1e-5)


def test_torchscript_mismatch_is_refused(monkeypatch) -> None:
    m = _model()
    monkeypatch.setattr(torch.jit, "script", lambda mod: (lambda x: mod(x) + 1.0))
    with pytest.raises(CheckpointError, match="TorchScript"):
        to_torchscript(m, torch.rand(2, 1, 16, 16))


def test_spatial_dims_from_meta() -> None:
    assert spatial_dims_of({}) == 2 and spatial_dims_of({"spatial_dims": 3}) == 3
    assert spatial_dims_of({"architecture": {"name": "x", "kwargs": {"spatial_dims": 3}}}) == 3
    with pytest.raises(CheckpointError, match="spatial_dims"):
        spatial_dims_of({"spatial_dims": 4})


def test_bundle_refuses_overwrite(ckpt, tmp_path) -> None:
    _, ck = ckpt
    export_bundle(ck, tmp_path / "bundle")
    before = (tmp_path / "bundle/models/model.pt").read_bytes()
    with pytest.raises(OutputExistsError):
        export_bundle(ck, tmp_path / "bundle")
    assert (tmp_path / "bundle/models/model.pt").read_bytes() == before
    export_bundle(ck, tmp_path / "bundle", overwrite=True)


def test_non_finite_model_is_not_exported() -> None:
    m = _model()
    with torch.no_grad():
        m.head.bias.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="finite"):
        to_torchscript(m, torch.rand(2, 1, 16, 16))


def test_torchscript_names_no_path_of_this_machine(ckpt, tmp_path) -> None:
    """Issue 29 (14): model.ts carried the absolute paths of the package's and torch's sources."""
    import sys
    import zipfile

    import medunlearn

    model, ck = ckpt
    out = export_bundle(ck, tmp_path / "bundle")
    blob = (out / "models" / "model.ts").read_bytes()
    roots = {str(Path(medunlearn.__file__).resolve().parent.parent), str(Path(torch.__file__).resolve().parent),
             sys.prefix, str(tmp_path)}
    for root in roots:
        assert root.encode() not in blob, root
    with zipfile.ZipFile(out / "models" / "model.ts") as z:
        assert not [n for n in z.namelist() if n.endswith(".debug_pkl")]
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(torch.jit.load(str(out / "models" / "model.ts"))(x), model.eval()(x), atol=1e-5)
