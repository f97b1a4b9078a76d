"""export-bundle RUN OUT --like SRC: SRC's tree and container, the unlearned weights under SRC's key names."""
from __future__ import annotations

import json

import pytest
import torch

from medunlearn.errors import CheckpointError
from medunlearn.models.bundle_like import export_like
from medunlearn.models.checkpoint import load_checkpoint
from medunlearn.selection.rules import build_rule
from medunlearn.workflow.steps_forget import forget
from tests.adopt.factory import synthetic_cohort, template_bundle


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return synthetic_cohort(tmp_path_factory.mktemp("cohort"), n_patients=16)


def _run(tmp_path, cohort, **bundle_kw):
    src = template_bundle(tmp_path / "src", **bundle_kw)
    run, _ = forget(cohort[1], src, build_rule(device="ScannerX"), tmp_path / "run", method="finetune",
                    overrides={"epochs": 1}, adopt_options={"membership": "unknown"})
    return src, run


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("kw", [{}, {"wrapper": "model", "ddp": True}])
def test_like_keeps_the_tree_container_and_key_names(tmp_path, cohort, kw) -> None:
    from monai.networks.nets import DenseNet121

    src, run = _run(tmp_path, cohort, **kw)
    before = (src / "models" / "model.pt").read_bytes()
    out = export_like(run, tmp_path / "out", src)
    assert _files(out) == _files(src) and (src / "models" / "model.pt").read_bytes() == before
    old = torch.load(src / "models" / "model.pt", weights_only=True)
    new = torch.load(out / "models" / "model.pt", weights_only=True)
    if kw:
        old, new = old["model"], new["model"]
        assert all(k.startswith("module.") for k in new)
    assert {k: tuple(v.shape) for k, v in new.items()} == {k: tuple(v.shape) for k, v in old.items()}
    model, meta = load_checkpoint(run)
    ours = model.state_dict()
    prefix = "module." if kw else ""
    for mine, theirs in meta["adoption"]["key_map"].items():
        assert torch.equal(new[prefix + theirs], ours[mine])
    assert any(not torch.equal(new[k], old[k]) for k in new)  # the weights did change
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3, init_features=4, growth_rate=4)
    net.load_state_dict({k[len(prefix):]: v for k, v in new.items()})  # MONAI's own network takes it, strictly
    x = torch.rand(2, 1, 32, 32)
    scale, offset = (meta["preprocessing"].get("pixel_map") or {}).get("scale", 1.0), 0.0
    offset = (meta["preprocessing"].get("pixel_map") or {}).get("offset", 0.0)
    want = torch.softmax(model.eval()((x - offset) / scale), 1)
    from monai.transforms import ScaleIntensity

    got = torch.softmax(net.eval()(torch.stack([ScaleIntensity()(xi) for xi in x])), 1)
    assert torch.allclose(got, want, atol=1e-4)
    md = json.loads((out / "configs" / "metadata.json").read_text())
    assert md["version"] != json.loads((src / "configs" / "metadata.json").read_text()).get("version")
    assert "ScannerX" in md["changelog"][md["version"]] and "status" in md["acceptance"]


def test_sigmoid_head_goes_back_to_one_logit() -> None:
    from medunlearn.models.bundle_like import original_state

    head = torch.nn.Linear(4, 2)
    with torch.no_grad():
        head.weight[0].zero_()
        head.bias[0].zero_()
    model = torch.nn.Sequential()
    model.add_module("head", head)
    adoption = {"key_map": {"head.weight": "class_layers.out.weight", "head.bias": "class_layers.out.bias"},
                "head": {"kind": "sigmoid1"}}
    source = {"class_layers.out.weight": torch.zeros(1, 4), "class_layers.out.bias": torch.zeros(1),
              "features.x": torch.ones(3)}
    out = original_state(model, adoption, source)
    assert out["class_layers.out.weight"].shape == (1, 4) and torch.equal(out["features.x"], torch.ones(3))
    x = torch.rand(5, 4)
    z = x @ out["class_layers.out.weight"].T + out["class_layers.out.bias"]
    assert torch.allclose(torch.sigmoid(z[:, 0]), torch.softmax(head(x), 1)[:, 1], atol=1e-6)


def test_like_refuses_another_bundle_and_its_own_source(tmp_path, cohort) -> None:
    src, run = _run(tmp_path, cohort)
    other = template_bundle(tmp_path / "other", seed=5)
    with pytest.raises(CheckpointError, match="another bundle"):
        export_like(run, tmp_path / "out", other)
    with pytest.raises(Exception, match="(?i)input|apart|inside|same"):
        export_like(run, src, src, overwrite=True)
    assert not (tmp_path / "out").exists()
