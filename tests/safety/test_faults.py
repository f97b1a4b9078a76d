"""Issue 29, Build item 8: a kill at every rename of every command's commit loses no previous result and shows
no mixed one; the next run finishes or undoes the commit and leaves no debris. (report and cohort index, the
multi-file units, are swept in test_issue29 p2 and p7.)"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.safety.world import build_world, forget_args, invoke, killed_at, leftovers

COMMANDS = ["train", "forget", "merge", "evaluate", "export-bundle", "forget-dry-run"]
# os.replace / os.rename calls each command's commit makes; the sweep kills at each one of them, and
# test_the_sweep_covers_every_rename fails (naming the new count) when a command's commit changes
RENAMES = {"train": 5, "forget": 9, "merge": 7, "evaluate": 1, "export-bundle": 8, "forget-dry-run": 1}
SWEEP = [(command, k) for command in COMMANDS for k in range(1, RENAMES[command] + 1)]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return build_world(tmp_path_factory.mktemp("faults"))


def _output_name(command: str) -> str:
    return {"evaluate": "eval.json", "forget-dry-run": "sel"}.get(command, "out")


@pytest.fixture(scope="module")
def versions(world, tmp_path_factory):
    """command -> (v1 folder, v2 folder): each command's two results written cleanly once, under the output's
    own name, for every kill of the sweep to start from (v1, copied into place) and compare with (v2)."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(command: str) -> tuple[Path, Path]:
        if command not in made:
            root = tmp_path_factory.mktemp(f"versions-{command}")
            pair = (root / "v1", root / "v2")
            for version, folder in enumerate(pair):
                folder.mkdir()
                out = folder / _output_name(command)
                assert invoke(*_args(world, command, out, version)).exit_code in (0, 3)
            made[command] = pair
        return made[command]
    return get


def _args(world: dict, command: str, out: Path, version: int) -> list:
    w = world
    if command == "train":
        return ["train", "--cohort", w["cohort"], "--model", "small_cnn", "--epochs", "1", "--image-size", "16",
                "--seed", str(version), "--out", out]
    if command == "forget":
        return forget_args(w["root"], out, version)
    if command == "merge":
        return ["merge", w["run_a"], w["run_b"], "--base", w["base"], "--method", "linear", "--weights",
                f"0.{version + 3},0.5", "--out", out, "--force"]
    if command == "evaluate":
        return ["evaluate", "--model", w["run_a" if version == 0 else "run_b"], "--cohort", w["cohort"], "--device",
                "ScannerX", "--out", out]
    if command == "export-bundle":
        return ["export-bundle", w["run_a" if version == 0 else "run_b"], out]
    return ["forget", "--cohort", w["cohort"], "--device", "ScannerX", "--dry-run", "--seed", str(version), "--out", out]


def _snapshot(out: Path) -> dict[str, str]:
    files = [out] if out.is_file() else sorted(p for p in out.rglob("*") if p.is_file())
    return {str(p.relative_to(out.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _version(out: Path, v1: dict[str, str], v2: dict[str, str]) -> int:
    """1 or 2: which complete result is visible. Fails when it is lost, torn or a mix of both."""
    assert out.exists(), "the previous result was lost"
    now = _snapshot(out)
    if now == v1:
        return 1
    assert set(now) == set(v2), f"a torn result: {sorted(set(now) ^ set(v2))}"
    shared = [k for k in now if v1.get(k) != v2.get(k)]  # files that tell the two versions apart
    from_v1 = [k for k in shared if now[k] == v1.get(k)]
    assert not from_v1, f"a mixed result: {from_v1} are from the previous version"
    for k in (k for k in now if k.endswith(".json")):
        json.loads((out.parent / k).read_text())
    return 2


@pytest.mark.parametrize(("command", "k"), SWEEP)
def test_a_kill_at_every_rename_keeps_one_whole_result(world, versions, tmp_path, command, k) -> None:
    name = _output_name(command)
    out = tmp_path / name
    target = (lambda p: p / "split.json") if command == "forget-dry-run" else (lambda p: p)
    # the two versions, written cleanly once per command: v1 copied into place, v2 elsewhere (what a whole v2 is)
    v1_dir, v2_dir = versions(command)
    if (v1_dir / name).is_dir():
        shutil.copytree(v1_dir / name, out)
    else:
        shutil.copy2(v1_dir / name, out)
    v1 = _snapshot(target(out))
    v2 = _snapshot(target(v2_dir / name))  # keys are relative to the parent folder: the same names as in `out`
    code, _ = killed_at(k, lambda: invoke(*_args(world, command, out, 1), "--overwrite"))
    assert code != 0, f"{command} finished without reaching rename {k}: its count changed (RENAMES)"
    aside = out.with_name(f".{out.name}.old")
    if out.exists():
        _version(target(out), v1, v2)  # right after the kill: the old result or the whole new one
    else:  # killed between the swap's two renames: the old result is whole, set aside, put back next run
        assert {k.replace(aside.name, out.name, 1): h for k, h in _snapshot(target(aside)).items()} == v1
    res = invoke(*_args(world, command, out, 1))  # no --overwrite: repairs, then refuses; deletes nothing
    assert res.exit_code == 2 and "exists" in res.output, res.output
    _version(target(out), v1, v2)
    res = invoke(*_args(world, command, out, 1), "--overwrite")
    assert res.exit_code in (0, 3), res.output
    assert leftovers(tmp_path, name) == [] and (command != "forget-dry-run" or leftovers(out, "split.json") == [])


def test_the_sweep_covers_every_rename(world, versions, tmp_path) -> None:
    counted = {}
    for command in COMMANDS:
        out = tmp_path / _output_name(command)
        v1 = versions(command)[0] / out.name
        shutil.copytree(v1, out) if v1.is_dir() else shutil.copy2(v1, out)
        code, counted[command] = killed_at(0, lambda c=command, o=out: invoke(*_args(world, c, o, 1), "--overwrite"))
        assert code == 0, command
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    assert counted == RENAMES  # the sweep kills at every one of them
