"""medunlearn's bundle loader refuses hostile bundles: off-list _target_, $ expressions, macros, pickles."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from medunlearn.errors import CheckpointError, DivergenceError
from medunlearn.models.bundle import export_bundle, load_bundle
from medunlearn.models.bundle_safety import UnsafeBundleError, check_config, check_metadata, inert
from medunlearn.models.checkpoint import save_checkpoint
from medunlearn.models.zoo import create_model


@pytest.fixture
def bundle(tmp_path):
    torch.manual_seed(0)
    m = create_model("small_cnn", 2, image_size=16, width=4).eval()
    ck = save_checkpoint(tmp_path / "ck", m, {"kind": "base", "class_names": ["a", "b"]})
    return export_bundle(ck, tmp_path / "bundle")


def _edit(bundle, name: str, change) -> None:
    path = bundle / "configs" / name
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


def test_exported_bundle_passes_its_own_checks(bundle) -> None:
    assert load_bundle(bundle).num_classes == 2


@pytest.mark.parametrize("change, where", [
    (lambda c: c.update(run=[{"_target_": "os.system", "command": "touch pwned"}]), "run::0::_target_"),
    (lambda c: c["preprocessing"]["transforms"].append({"_target_": "subprocess.Popen", "args": ["id"]}),
     "preprocessing::transforms"),
    (lambda c: c["medunlearn_network_def"].update(_target_="builtins.eval"), "medunlearn_network_def"),
    (lambda c: c.update(network_def={"_target_": "monai.transforms.Lambda", "func": "x"}), "network_def"),
])
def test_off_list_target_is_refused(bundle, change, where) -> None:
    _edit(bundle, "inference.json", change)
    with pytest.raises(UnsafeBundleError, match=f"allowed MONAI/medunlearn classes.*{where}"):
        load_bundle(bundle)


@pytest.mark.parametrize("change", [
    lambda c: c.update(device="$__import__('os').system('touch pwned')"),
    lambda c: c["imports"].append("$import subprocess"),
    lambda c: c.update(run=["$@evaluator.run() or os.system('id')"]),  # one of ours, altered
    lambda c: c["dataset"].update(_disabled_="$os.remove('x')"),
])
def test_dollar_expression_is_refused(bundle, change) -> None:
    _edit(bundle, "inference.json", change)
    with pytest.raises(UnsafeBundleError, match=r"no \$ expressions"):
        load_bundle(bundle)


def test_macro_and_debug_mode_are_refused(bundle) -> None:
    _edit(bundle, "inference.json", lambda c: c.update(network_def="%/tmp/evil.json::net"))
    with pytest.raises(UnsafeBundleError, match="% macros"):
        load_bundle(bundle)
    cfg = {"inferer": {"_target_": "monai.inferers.SimpleInferer", "_mode_": "debug"}}
    with pytest.raises(UnsafeBundleError, match="_mode_"):
        check_config(cfg)


def test_network_arguments_must_be_literals(bundle) -> None:
    _edit(bundle, "inference.json", lambda c: c["medunlearn_network_def"].update(width="@device"))
    with pytest.raises(UnsafeBundleError, match="literal arguments"):
        load_bundle(bundle)


def test_metadata_must_be_plain_data(bundle) -> None:
    _edit(bundle, "metadata.json", lambda m: m["network_data_format"]["outputs"]["pred"]["channel_def"].update(
        {"0": "$__import__('os').system('id')"}))
    with pytest.raises(UnsafeBundleError, match="metadata.json"):
        load_bundle(bundle)
    with pytest.raises(UnsafeBundleError, match="_target_"):
        check_metadata({"x": {"_target_": "os.system"}})


def test_pickle_payload_in_model_pt_is_refused(bundle, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    (bundle / "models/model.pt").write_bytes(pickle.dumps({"w": Payload()}, protocol=2))
    _edit(bundle, "metadata.json", lambda m: m["medunlearn"].pop("model_pt_sha256"))
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_bundle(bundle)
    assert not (tmp_path / "pwned").exists()


def test_weights_changed_after_export_are_refused(bundle) -> None:
    state = torch.load(bundle / "models/model.pt", weights_only=True)
    state["head.bias"] = state["head.bias"] + 1.0
    torch.save(state, bundle / "models/model.pt")
    with pytest.raises(CheckpointError, match="changed after export"):
        load_bundle(bundle)


def test_non_finite_weights_are_refused(bundle) -> None:
    state = torch.load(bundle / "models/model.pt", weights_only=True)
    state["head.bias"] = state["head.bias"] * float("nan")
    torch.save(state, bundle / "models/model.pt")
    _edit(bundle, "metadata.json", lambda m: m["medunlearn"].pop("model_pt_sha256"))
    with pytest.raises(DivergenceError, match="finite"):
        load_bundle(bundle)


def test_short_monai_names_are_accepted_and_inert_leaves_text() -> None:
    check_config({"x": {"_target_": "LoadImaged", "keys": "image"}, "y": "@x"})
    with pytest.raises(UnsafeBundleError):
        check_config({"x": {"_target_": "system"}})
    assert inert({"a": ["$x", "ok", 3], "b": "@y"}) == {"a": [" $x", "ok", 3], "b": " @y"}


def test_missing_config_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="configs/inference.json"):
        load_bundle(tmp_path)


def _exported_config():
    from medunlearn.models.bundle_config import inference_config

    return inference_config({"name": "small_cnn", "kwargs": {"num_classes": 3}}, 16, 1)


def test_issue29_item3_reader_naming_a_callable_is_refused():
    from medunlearn.models.bundle_safety import UnsafeBundleError, check_config

    cfg = _exported_config()
    cfg["preprocessing"]["transforms"][0]["reader"] = "os.system"
    with pytest.raises(UnsafeBundleError, match="reader"):
        check_config(cfg)
    cfg = _exported_config()
    cfg["preprocessing"]["transforms"][0]["command"] = "touch x"
    with pytest.raises(UnsafeBundleError, match="'command'"):
        check_config(cfg)


def test_issue29_item11_huge_class_count_refused_before_allocation(tmp_path):
    import json

    from medunlearn.errors import CheckpointError
    from medunlearn.models.bundle import load_bundle

    (tmp_path / "configs").mkdir()
    cfg = _exported_config()
    cfg["medunlearn_network_def"]["num_classes"] = 10 ** 12
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_classes between 1 and"):
        load_bundle(tmp_path)
