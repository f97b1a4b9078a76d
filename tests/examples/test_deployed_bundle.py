"""examples/deployed_bundle.py (the hospital team's own plain-MONAI trainer, where `make demo` starts) and the
hand-back: MONAI's own `monai.bundle run` on `export-bundle --like` output predicts what medunlearn computes."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medunlearn.models.bundle_like import export_like
from medunlearn.models.checkpoint import load_checkpoint, save_checkpoint
from medunlearn.models.monai_run import compare_predictions, run_bundle
from medunlearn.selection.rules import build_rule
from medunlearn.workflow.steps_forget import forget
from tests.adopt.factory import synthetic_cohort

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "deployed_bundle.py"


def _example():
    spec = importlib.util.spec_from_file_location("deployed_bundle", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny SYNTHETIC archive, its cohort, and a DenseNet121 bundle trained on it by the example script run
    with medunlearn blocked (the script must not import it)."""
    root = tmp_path_factory.mktemp("site")
    df, _ = synthetic_cohort(root, n_patients=12)
    code = ("import runpy, sys; sys.modules['medunlearn'] = None; "
            f"sys.argv = ['deployed_bundle', {str(root / 'images')!r}, {str(root / 'bundle')!r}, '--epochs', '1']; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-800:]
    return root / "images", root / "bundle", df


def test_the_example_trains_a_bundle_in_the_template_layout_without_medunlearn(site) -> None:
    archive, bundle, df = site
    for rel in ("configs/inference.yaml", "configs/metadata.json", "models/model.pt", "datalist.json"):
        assert (bundle / rel).is_file(), rel
    datalist = json.loads((bundle / "datalist.json").read_text())
    listed = [e["image"] for k in ("training", "validation", "test") for e in datalist[k]]
    assert sorted(listed) == sorted(str(Path(p).relative_to(archive)) for p in df["path"])  # every image, once
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert "class_layers.out.weight" in state  # MONAI DenseNet121's own key names, no wrapper


def test_the_example_refuses_an_archive_without_labels(tmp_path) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path / "b")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and "labels.csv" in res.stderr and not (tmp_path / "b").exists()


def test_monai_runs_the_like_export_and_predicts_the_unlearned_weights(site, tmp_path) -> None:
    archive, bundle, df = site
    run, _ = forget(df, bundle, build_rule(device="ScannerX"), tmp_path / "run", method="finetune",
                    overrides={"epochs": 1}, adopt_options={"datalist": str(bundle / "datalist.json")})
    model, meta = load_checkpoint(run)
    with torch.no_grad():  # weights certainly unlike the deployed ones, so the contrast below can fail
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    run = save_checkpoint(tmp_path / "changed", model, meta)
    out = export_like(run, tmp_path / "out", bundle)
    preds = run_bundle(out, archive, tmp_path / "monai_eval")
    rec = compare_predictions(run, preds, df)
    n_test = len(json.loads((bundle / "datalist.json").read_text())["test"])
    assert rec["passed"] and rec["matched"] == rec["rows"] == n_test and rec["max_prob_diff"] <= 1e-4
    original = run_bundle(bundle, archive, tmp_path / "monai_original")  # the deployed weights, for contrast
    assert compare_predictions(run, original, df)["max_prob_diff"] > 1e-4  # MONAI read the new weights


def test_the_bundle_demo_adopts_unlearns_merges_and_hands_back_what_monai_runs(site, tmp_path) -> None:
    from medunlearn.workflow.demo_bundle import run_bundle_demo

    archive, bundle, _ = site
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    lines: list[str] = []
    result = run_bundle_demo(bundle, archive, tmp_path / "demo", echo=lambda m: lines.append(str(m)))
    out = tmp_path / "demo"
    for rel in ("cohort.csv", "base/meta.json", "runs/famr_device/metrics.json",
                "runs/famr_site/metrics.json", "merged/metrics.json", "report/report.html",
                "bundle/models/model.pt", "bundle/configs/inference.yaml", "handback.json"):
        assert (out / rel).is_file(), rel
    assert json.loads((out / "base" / "meta.json").read_text())["synthetic"] is True  # carried from the cohort
    assert result["handback"]["monai_run"]["passed"], result["handback"]
    assert any("SYNTHETIC" in line for line in lines) and any("MONAI ran it" in line for line in lines)
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before  # the input is never written
    with pytest.raises(Exception, match="(?i)overwrite|not empty|exists"):
        run_bundle_demo(bundle, archive, out, echo=lambda m: None)  # no silent clobber
