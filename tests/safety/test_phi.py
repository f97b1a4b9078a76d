"""Issue 15 items 2 and 3: a PHI fixture archive (folder names carry a fake MRN and name, headers a fake
PatientID) goes through every command; no output except the private locator holds a path or identifier.
Pseudonyms need a secret salt on real data; only its fingerprint and true source are recorded."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from medunlearn.cli.main import app
from medunlearn.data.deid import DEFAULT_SALT, salt_fingerprint
from medunlearn.data.dicom import pseudonym

runner = CliRunner()
MRN, NAME = "123456", ("DOE", "JANE")
NEEDLES = (MRN, "MRN-", "DOE", "JANE")


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _phi_archive(root: Path) -> Path:
    """Real-looking (non-synthetic) DICOM: synthetic pixels re-filed under identifying folder names."""
    assert invoke("cohort", "synth", root / "synth", "--patients", "30", "--seed", "1", "--image-size", "16").exit_code == 0
    labels = pd.read_csv(root / "synth" / "labels.csv", dtype=str)
    archive = root / "archive"
    rows = []
    for i, row in labels.iterrows():
        ds = pydicom.dcmread(root / "synth" / row["path"])
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.DeidentificationMethod = ""
        ds.PatientID = f"MRN-{MRN}-{str(ds.PatientID)[-2:]}"
        ds.PatientName = f"{NAME[0]}^{NAME[1]}{str(ds.PatientID)[-2:]}"
        site = str(ds.get("InstitutionName", "site")).replace(" ", "_")
        rel = f"{site}/MRN-{MRN}{ds.PatientID[-2:]}_{NAME[0]}_{NAME[1]}/series1/IM{i:04d}.dcm"
        (archive / rel).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(archive / rel)
        rows.append({"path": rel, "label": row["label"]})
    junk = archive / f"MRN-{MRN}_{NAME[0]}_{NAME[1]}" / "notes.bin"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"not an image")
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return archive


@pytest.fixture(scope="module")
def phi(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("phi")
    archive = _phi_archive(root)
    (root / "salt.txt").write_text("a-long-secret-salt-for-tests\n")
    work = root / "work"
    work.mkdir()
    return {"root": root, "archive": archive, "work": work, "salt": root / "salt.txt"}


def test_public_default_salt_is_refused_on_real_data(phi) -> None:
    res = invoke("cohort", "index", phi["archive"], "--labels", phi["root"] / "labels.csv",
                 "--out", phi["work"] / "refused.csv", env={"MEDUNLEARN_SALT": ""})
    assert res.exit_code == 2 and "salt" in res.output and "--public-salt" in res.output
    assert not (phi["work"] / "refused.csv").exists()
    res = invoke("cohort", "index", phi["archive"], "--labels", phi["root"] / "labels.csv", "--public-salt",
                 "--out", phi["work"] / "public.csv", "--report", phi["work"] / "public.json", env={"MEDUNLEARN_SALT": ""})
    assert res.exit_code == 0 and "PUBLIC default salt" in res.output
    assert '"salt_source": "public-default"' in (phi["work"] / "public.json").read_text()


def test_salt_sources_are_recorded_truthfully_by_fingerprint(phi) -> None:
    secret = "env-secret-salt-123"
    res = invoke("cohort", "index", phi["archive"], "--labels", phi["root"] / "labels.csv",
                 "--out", phi["work"] / "env.csv", "--report", phi["work"] / "env.json", env={"MEDUNLEARN_SALT": secret})
    assert res.exit_code == 0, res.output
    report = (phi["work"] / "env.json").read_text()
    assert '"salt_source": "env"' in report and salt_fingerprint(secret) in report and secret not in report
    res = invoke("cohort", "index", phi["archive"], "--labels", phi["root"] / "labels.csv", "--salt", "cli-secret-123",
                 "--out", phi["work"] / "arg.csv", "--report", phi["work"] / "arg.json", env={"MEDUNLEARN_SALT": ""})
    assert res.exit_code == 0 and "shell history" in res.output
    assert '"salt_source": "argument"' in (phi["work"] / "arg.json").read_text()
    # with a secret salt the pseudonym of a guessed MRN no longer matches
    ids = set(pd.read_csv(phi["work"] / "env.csv")["patient"])
    guesses = {pseudonym("P", f"MRN-{MRN}-{k:02d}", DEFAULT_SALT) for k in range(100)}
    assert not ids & guesses


def test_no_output_but_the_locator_carries_paths_or_identifiers(phi) -> None:
    w = phi["work"] / "e2e"
    cohort = w / "cohort.csv"
    steps = [
        ["cohort", "index", phi["archive"], "--labels", phi["root"] / "labels.csv", "--salt-file", phi["salt"],
         "--out", cohort, "--report", w / "ingest.json"],
        ["train", "--cohort", cohort, "--model", "small_cnn", "--epochs", "1", "--image-size", "16", "--out", w / "base"],
        ["forget", "--cohort", cohort, "--device", "ScannerX", "--dry-run", "--out", w / "sel"],
        ["forget", "--cohort", cohort, "--model", w / "base", "--device", "ScannerX", "--method", "finetune",
         "--set", "epochs=0.2", "--out", w / "run"],
        ["evaluate", "--model", w / "run", "--cohort", cohort, "--device", "ScannerX", "--out", w / "eval.json"],
        ["merge", w / "run", "--base", w / "base", "--method", "linear", "--cohort", cohort, "--out", w / "merged",
         "--force"],  # the tiny run may miss its criteria: merge it anyway
        ["report", w / "run"],
        ["export-bundle", w / "merged", w / "bundle"],
    ]
    console = []
    for args in steps:  # the site secret signs and checks the verdicts (medunlearn.attest)
        res = invoke(*args, env={"MEDUNLEARN_SALT_FILE": str(phi["salt"])})
        assert res.exit_code in (0, 3), (args[0], res.output)
        console.append(res.output)
    locator = w / "cohort.locator.json"
    assert any(MRN in line for line in locator.read_text().splitlines())  # the private map does hold them
    table = pd.read_csv(cohort, dtype=str)
    assert "path" not in table.columns and table["study_date"].str.endswith("-01").all()
    outputs = [p for p in w.rglob("*") if p.is_file() and p != locator]
    assert len(outputs) > 15
    for p in outputs:
        raw = p.read_bytes()
        try:  # text: embedded base64 images are random letters ("DOE" turns up by chance), so drop them first
            text, needles = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", raw.decode("utf-8")), NEEDLES
        except UnicodeDecodeError:  # binary (weights, PNG, PDF): a 3-letter needle matches random bytes too
            text, needles = raw.decode("latin-1"), tuple(n for n in NEEDLES if len(n) >= 4)
        for needle in needles + (str(phi["archive"]),):
            assert needle not in text, f"{needle!r} found in {p.relative_to(w)}"
    for out in console:
        for needle in NEEDLES:
            assert needle not in out, out


def test_moved_cohort_folder_keeps_working_and_errors_name_ids(phi, tmp_path) -> None:
    src = tmp_path / "site"
    shutil.copytree(phi["archive"], src / "archive")
    shutil.copy(phi["root"] / "labels.csv", src / "labels.csv")
    res = invoke("cohort", "index", src / "archive", "--labels", src / "labels.csv", "--salt-file", phi["salt"],
                 "--out", src / "cohort.csv")
    assert res.exit_code == 0, res.output
    moved = tmp_path / "elsewhere" / "site"
    shutil.move(str(src), str(moved))  # the recorded absolute root no longer exists
    common = ["--cohort", moved / "cohort.csv", "--model", "small_cnn", "--epochs", "1", "--image-size", "16"]
    res = invoke("train", *common, "--out", tmp_path / "base")
    assert res.exit_code == 0, res.output
    # a deleted image is named by its pseudonymous id, never by its (identifying) path
    victim = next((moved / "archive").rglob("*.dcm"))
    victim.unlink()
    res = invoke("train", *common, "--out", tmp_path / "base2")
    assert res.exit_code == 2 and "missing" in res.output and "image I-" in res.output, res.output
    for needle in NEEDLES:
        assert needle not in res.output
    # a table shared without its locator still selects, and says what is missing when images are needed
    alone = tmp_path / "shared"
    alone.mkdir()
    shutil.copy(moved / "cohort.csv", alone / "cohort.csv")
    assert invoke("forget", "--cohort", alone / "cohort.csv", "--device", "ScannerX", "--dry-run",
                  "--out", alone).exit_code == 0
    res = invoke("train", "--cohort", alone / "cohort.csv", "--epochs", "1", "--out", tmp_path / "b3")
    assert res.exit_code == 2 and "locator" in res.output
