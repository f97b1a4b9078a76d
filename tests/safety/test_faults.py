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

MAX_K = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return build_world(tmp_path_factory.mktemp("faults"))


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


COMMANDS = ["train", "forget", "merge", "evaluate", "export-bundle", "forget-dry-run"]


@pytest.mark.parametrize("k", range(1, MAX_K + 1))
@pytest.mark.parametrize("command", COMMANDS)
def test_a_kill_at_every_rename_keeps_one_whole_result(world, tmp_path, command, k) -> None:
    name = {"evaluate": "eval.json", "forget-dry-run": "sel"}.get(command, "out")
    out, ref = tmp_path / name, tmp_path / "ref" / name
    (tmp_path / "ref").mkdir()
    target = (lambda p: p / "split.json") if command == "forget-dry-run" else (lambda p: p)
    # the two versions, written cleanly: v1 in place, v2 elsewhere (to know what a whole v2 looks like)
    assert invoke(*_args(world, command, out, 0)).exit_code in (0, 3)
    assert invoke(*_args(world, command, ref, 1)).exit_code in (0, 3)
    v1 = _snapshot(target(out))
    v2 = _snapshot(target(ref))  # keys are relative to the parent folder: the same names as in `out`
    code, calls = killed_at(k, lambda: invoke(*_args(world, command, out, 1), "--overwrite"))
    if code == 0:
        assert calls < k <= MAX_K
        pytest.skip(f"{command} makes {calls} renames")
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


def test_the_sweep_covers_every_rename(world, tmp_path) -> None:
    for command in COMMANDS:
        out = tmp_path / command
        assert invoke(*_args(world, command, out, 0)).exit_code in (0, 3)
        _, calls = killed_at(0, lambda command=command, out=out: invoke(*_args(world, command, out, 1), "--overwrite"))
        assert 0 < calls < MAX_K, (command, calls)
        shutil.rmtree(out) if out.is_dir() else out.unlink()
