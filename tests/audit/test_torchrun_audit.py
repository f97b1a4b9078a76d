"""torchrun: `audit prepare` under 2 processes (gloo, CPU): reference models train under DDP, only rank 0 writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medunlearn.data.cohort import index_archive, write_cohort
from medunlearn.data.synthetic import synthesize_cohort
from medunlearn.workflow.steps_train import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_audit_prepare_under_torchrun_writes_once(tmp_path):
    synthesize_cohort(tmp_path / "arc", n_patients=20, seed=0, image_size=32)
    df, _ = index_archive(tmp_path / "arc", tmp_path / "arc" / "labels.csv", salt="s", workers=1)
    write_cohort(df, tmp_path / "cohort.csv")
    train(tmp_path / "cohort.csv", tmp_path / "base", model="small_cnn", epochs=1, batch_size=16, image_size=16)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "medunlearn.cli.main", "audit", "prepare", "--cohort", "cohort.csv", "--model", "base", "--out", "audit",
           "--k", "2"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("Wrote audit") == 1  # rank 1 prints nothing
    manifest = json.loads((tmp_path / "audit" / "manifest.json").read_text())
    assert manifest["cost"]["world_size"] == 2 and len(manifest["models"]) == 2
    prov = json.loads((tmp_path / "audit" / "refs" / "ref_00" / "provenance.json").read_text())
    assert prov["run"]["backend"] == "gloo"
