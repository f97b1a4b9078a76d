"""render_report: sections, self-contained HTML, PHI hygiene, synthetic banner, merged metrics shape."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from medunlearn.attest import seal
from medunlearn.errors import MedUnlearnError, OutputExistsError
from medunlearn.fileio import write_json
from medunlearn.models.checkpoint import save_checkpoint
from medunlearn.models.zoo import create_model
from medunlearn.report import render_report

CORE = {"forget_acc": 91.0, "retain_acc": 95.0, "test_retain_acc": 90.0, "test_forget_acc": 88.0,
        "mia_efficacy": 12.0, "auroc": 0.97, "ece": 0.031}


def _metrics(fa: float) -> dict:
    return {
        "schema_version": 1, "class_names": ["normal", "drusen"], "chance_acc": 50.0, **CORE, "forget_acc": fa,
        "auroc": {"macro": 0.93, "per_class": {"normal": 0.9}}, "mia": {"loss_lr": {"auc_mean": 0.55},
                                                                       "scores": {"forget": [0.1, 0.4, 0.3], "test": [0.5, 0.6, 0.2]}},
        "per_device": {"ScannerA": {"n_train": 40, "train_acc": 97.5, "n_test": 20, "test_acc": 90.0},
                       "ScannerX": {"n_train": 12, "train_acc": 50.0, "n_test": 6, "test_acc": 50.0}},
        "per_site": {"SiteA": {"n_train": 52, "train_acc": 88.0, "n_test": 26, "test_acc": 80.0}},
        "confusion": {"labels": ["normal", "drusen"], "matrix": [[10, 2], [3, 11]]},
        "original": dict(CORE), "reference": {**CORE, "forget_acc": 52.0}, "avg_gap": 4.25, "rte": 11.5,
        "wall_time_s": 3.2,
    }


def _run_dir(root: Path, merged: bool = False, rule: str = "device = ScannerX", synthetic: bool = True) -> Path:
    d = root / ("merged" if merged else "run")
    d.mkdir()
    meta = {"kind": "merged" if merged else "unlearned", "rule": rule, "base_sha256": "ab" * 32,
            "config": {"method": "psg", "goal": "suppression", "epsilon": 0.1}, "seed": 3,
            "code_version": "0.1.0+gtest", "counts": {"images": 60, "patients": 20, "devices": 1, "sites": 1},
            "synthetic": synthetic, "log": {"psg": {"relabel_histogram": {"normal": 7, "drusen": 5}}},
            "source": {"PatientName": "SYNTH^JANE", "PatientID": "RAW-PID-123", "PatientBirthDate": "19700101",
                       "patient": "pseudo_7f3a"}}
    metrics = _metrics(60.0)
    if merged:
        meta["merge"] = {"method": "ties", "weights": [1.0, 1.0], "config": {"density": 0.2, "scaling": 1.0},
                         "runs": [{"path": "runs/psg_x", "rule": "device = ScannerX", "method": "psg",
                                   "goal": "suppression", "counts": {"images": 60, "patients": 20}, "sha256": "cd" * 32},
                                  {"path": "runs/famr_b", "rule": "site = SiteB", "method": "famr", "goal": "equivalence",
                                   "counts": {"images": 30, "patients": 9}, "sha256": "ef" * 32}]}
        metrics = {"schema_version": 1, "policies": {"psg_x": _metrics(55.0), "famr_b": _metrics(70.0)},
                   "union": _metrics(62.0)}
        metrics["policies"]["famr_b"]["certificate"] = {"delta_norm": 0.12, "bound_a_priori": 0.9, "label": "theory"}
    torch.manual_seed(0)
    save_checkpoint(d, create_model("small_cnn", 2, 1, 16, width=4), meta)  # the report verifies real weights
    write_json(d / "metrics.json", seal(d, metrics))  # signed, as forget/merge write it
    write_json(d / "provenance.json", {"created": "2025-01-01T00:00:00", "code_version": "0.1.0+gtest", "seed": 3,
                                       "input_hashes": {"cohort_hash": "11" * 32}, "environment": {"torch": "2.13.0"}})
    return d


def test_single_run_report(tmp_path):
    d = _run_dir(tmp_path)
    paths = render_report(d, tmp_path / "out")
    assert sorted(paths) == ["html", "json", "md"] and all(p.is_file() for p in paths.values())
    page = paths["html"].read_text()
    for section in ("Description of Modification", "Modification Protocol", "Impact Assessment", "Plots", "Limitations"):
        assert f"<h2>{section}</h2>" in page and f"## {section}" in paths["md"].read_text()
    assert "device = ScannerX" in page and "SYNTHETIC DATA" in page and 'class="banner"' in page
    assert "91.00" in page and "60.00" in page and "52.00" in page and "4.2500" not in page  # FA orig/unl/retrain
    assert "4.25" in page and "11.50" in page  # Avg-Gap, RTE
    assert "ScannerX" in page and "SiteA" in page
    doc = json.loads(paths["json"].read_text())
    assert doc["synthetic"] is True and [s["title"] for s in doc["sections"]][:2] == ["Verdict", "Description of Modification"]
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(imgs) >= 5  # bars, per device, per site, confusion, MIA, relabel histogram
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page) and "<script" not in page and "<link" not in page
    assert "@import" not in page and "url(" not in page


def test_phi_never_appears(tmp_path):
    d = _run_dir(tmp_path)
    paths = render_report(d, tmp_path / "out")
    for p in paths.values():
        text = p.read_text()
        for secret in ("SYNTH^JANE", "JANE", "RAW-PID-123", "19700101", "PatientName", "PatientBirthDate"):
            assert secret not in text, (p.name, secret)


def test_phi_scrub_refuses_and_writes_nothing(tmp_path):
    d = _run_dir(tmp_path, rule="patient = DOE^JOHN")
    with pytest.raises(MedUnlearnError, match="deny-list") as exc:
        render_report(d, tmp_path / "out")
    assert "DOE" not in str(exc.value) and "meta.rule" in str(exc.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    (tmp_path / "x").mkdir()
    d2 = _run_dir(tmp_path / "x")
    with pytest.raises(MedUnlearnError):
        render_report(d2, tmp_path / "out2", deny_patterns=[r"Scanner[X]"])


def test_merged_report_and_overwrite(tmp_path):
    d = _run_dir(tmp_path, merged=True, synthetic=False)
    paths = render_report(d)
    page = paths["html"].read_text()
    assert "Policy: psg_x" in page and "Policy: famr_b" in page and "Union of all forget sets" in page
    assert "site = SiteB" in page and "equivalence" in page and "FAMR certificate" in page
    assert "merged" in page and 'class="banner"' not in page
    with pytest.raises(OutputExistsError):
        render_report(d)
    assert render_report(d, overwrite=True)["md"].is_file()


def test_html_escapes_text(tmp_path):
    d = _run_dir(tmp_path, rule='label = "<script>alert(1)</script>" & x')
    page = render_report(d, tmp_path / "o")["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="chromium not installed")
def test_renders_headless_in_chromium(tmp_path):
    page = render_report(_run_dir(tmp_path), tmp_path / "o")["html"]
    shot = tmp_path / "shot.png"
    subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1024,2000", page.resolve().as_uri()], timeout=120, capture_output=True)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
