"""Static resolver: real zoo shapes resolve; every hostile bundle is refused and nothing in it runs."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

import medunlearn.cli.main  # noqa: F401  (registers every command)
from medunlearn.adopt.resolver import resolve_bundle, resolve_config
from medunlearn.cli.app import app
from medunlearn.errors import CheckpointError
from tests.adopt.factory import HOSTILE, hostile_bundle, synthetic_cohort, template_config


def test_template_config_resolves_to_literals():
    r = resolve_config(template_config())
    assert r.network.name == "DenseNet121" and r.network.args["out_channels"] == 3
    assert r.network.args["pretrained"] is False
    assert [s.name for s in r.preprocessing] == ["LoadImaged", "EnsureChannelFirstd", "ScaleIntensityd"]
    assert r.preprocessing[0].args["keys"] == ["image"]  # via @image -> $monai.utils.CommonKeys.IMAGE
    assert r.postprocessing[-1].args == {"_not_built": True}  # ToTensord(device=@device): never built


def test_pretrained_forced_off_and_macro_same_file_only():
    cfg = template_config()
    cfg["network_def"]["pretrained"] = True
    cfg["net_copy"] = "%network_def"
    assert resolve_config(cfg).network.args["pretrained"] is False
    cfg["preprocessing"] = "%other.json#preprocessing"
    with pytest.raises(CheckpointError, match="% macro"):
        resolve_config(cfg)


@pytest.mark.parametrize("kind", [k for k in HOSTILE if k != "pickle"])
def test_hostile_config_refused_and_nothing_runs(tmp_path, kind):
    b = hostile_bundle(tmp_path / "b", kind)
    if kind in ("imports",):  # imports are never read: the bundle itself is fine, and the file never appears
        resolve_bundle(b)
    else:
        with pytest.raises(CheckpointError):
            resolve_bundle(b)
    assert not (tmp_path / "b" / "PWNED").exists()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return synthetic_cohort(tmp_path_factory.mktemp("cohort"), n_patients=4)[1]


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_bundle_cli_exit_2(tmp_path, cohort, kind, capsys):
    b = hostile_bundle(tmp_path / "b", kind)
    if kind == "imports":
        b = tmp_path / "b"
        # the imports entry is never run; only an extra network arg makes this bundle hostile to adopt
    res = CliRunner().invoke(app, ["adopt", str(b), "--cohort", str(cohort), "--out", str(tmp_path / "out"),
                                   "--membership", "unknown"])
    assert not (tmp_path / "b" / "PWNED").exists()
    assert "pickle code ran" not in res.output
    if kind == "imports":
        assert res.exit_code == 0, res.output
    else:
        assert res.exit_code == 2, res.output
        assert "Usage:" not in res.output and "refus" in res.output.lower(), res.output
        assert not (tmp_path / "out").exists()
