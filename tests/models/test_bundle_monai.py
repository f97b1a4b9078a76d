"""The exported bundle runs under MONAI's own tools, in a process where medunlearn cannot be imported.

One subprocess (module fixture) instantiates network / preprocessing / inferer with monai.bundle.ConfigParser,
checks MONAI's infer-workflow properties, and runs `python -m monai.bundle run` over a folder of synthetic
DICOM (.dcm, .DCM, no extension) and NIfTI images. Its outputs must equal medunlearn's own data path +
`evaluate.functional.predict` (what `medunlearn evaluate` scores) within float tolerance.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medunlearn.data.cohort import index_archive
from medunlearn.data.datasets import load_images
from medunlearn.data.synthetic import CLASS_NAMES, synthesize_cohort
from medunlearn.evaluate.functional import predict
from medunlearn.models.bundle import export_bundle
from medunlearn.models.checkpoint import save_checkpoint
from medunlearn.models.zoo import create_model

RUNNER = r'''
import importlib.abc, json, runpy, sys

class _BlockMedunlearn(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "medunlearn" or name.startswith("medunlearn."):
            raise ImportError("medunlearn is not installed here (blocked by the test)")
        return None

sys.meta_path.insert(0, _BlockMedunlearn())
root, images, out, files = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

parser = ConfigParser()
parser.read_config(root + "/configs/inference.json")
parser.read_meta(root + "/configs/metadata.json")
parser["bundle_root"] = root
network, pre, inferer = (parser.get_parsed_content(k) for k in ("network", "preprocessing", "inferer"))
with torch.no_grad():
    logits = inferer(torch.stack([pre({"image": f})["image"] for f in files]), network)
flow = ConfigWorkflow(config_file=root + "/configs/inference.json", workflow_type="infer", logging_file=False,
                      bundle_root=root, dataset_dir=images, output_dir=out)
flow.initialize()
missing = flow.check_properties()
sys.argv = ["monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir", images,
            "--output_dir", out]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
probe = {"logits": logits.tolist(), "missing": missing,
         "medunlearn_modules": sorted(m for m in sys.modules if m.startswith("medunlearn"))}
with open(out + "/probe.json", "w") as fh:
    json.dump(probe, fh)
'''


def _images(root: Path) -> None:
    """9 synthetic DICOMs from all four scanners, one 2D NIfTI with a BIDS sidecar, plus non-image files."""
    synthesize_cohort(root, n_patients=6, seed=0, image_size=24, images_per_patient=(1, 2))
    nifti = root / "nifti" / "sub-01"
    nifti.mkdir(parents=True)
    grid = np.add.outer(np.arange(20.0), np.arange(18.0) ** 1.5).astype(np.float32)
    nib.save(nib.Nifti1Image(grid, np.eye(4)), str(nifti / "sub-01_T2w.nii.gz"))
    (nifti / "sub-01_T2w.json").write_text(json.dumps({"Manufacturer": "Synthetic"}))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monai_bundle")
    _images(tmp / "images")
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, 1, 16, width=4)
    model.train()
    model(torch.rand(8, 1, 16, 16))  # non-trivial BatchNorm statistics
    ck = save_checkpoint(tmp / "ck", model.eval(), {"kind": "base", "class_names": list(CLASS_NAMES),
                                                    "synthetic": True})
    bundle = export_bundle(ck, tmp / "bundle")
    df, _ = index_archive(tmp / "images", tmp / "images" / "labels.csv", salt="s", workers=1)
    df = df.assign(label=CLASS_NAMES[0])  # the NIfTI has no label; predictions do not use labels
    x, _ = load_images(df, list(CLASS_NAMES), 16)
    logits = predict(model, x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp / "eval"
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(bundle), str(tmp / "images"), str(out),
                           json.dumps(df["path"].tolist())], cwd=bundle, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"paths": df["path"].tolist(), "logits": logits, "out": out,
            "probe": json.loads((out / "probe.json").read_text())}


def test_cohort_covers_every_file_kind(run) -> None:
    suffixes = {"".join(Path(p).suffixes) for p in run["paths"]}
    assert suffixes == {".dcm", ".DCM", "", ".nii.gz"}


def test_runs_without_medunlearn(run) -> None:
    assert run["probe"]["medunlearn_modules"] == []
    assert run["probe"]["missing"] == []  # MONAI's required inference-workflow properties are all there


def test_config_parser_network_matches_medunlearn(run) -> None:
    got = torch.tensor(run["probe"]["logits"])
    assert got.shape == run["logits"].shape
    assert torch.allclose(got, run["logits"], atol=1e-5)


def test_monai_bundle_run_writes_medunlearn_predictions(run) -> None:
    probs = pd.read_csv(run["out"] / "predictions.csv", header=None, index_col=0)
    assert sorted(probs.index) == sorted(run["paths"])  # labels.csv, README.txt and the sidecar are skipped
    got = torch.tensor(probs.loc[run["paths"]].to_numpy(), dtype=torch.float32)
    assert torch.allclose(got, torch.softmax(run["logits"], 1), atol=1e-5)
    classes = pd.read_csv(run["out"] / "predicted_class.csv", header=None, index_col=0)
    assert classes.loc[run["paths"], 1].astype(int).tolist() == run["logits"].argmax(1).tolist()
