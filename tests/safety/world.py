"""A tiny real pipeline for the issue-29 tests (synthetic cohort, base, two forget runs) and a true kill.

`killed_at(k, fn)` runs `fn` in a forked child whose k-th os.replace / os.rename ends the process with
os._exit (no `finally`, no clean-up: what SIGKILL leaves), so the tests see exactly what a kill leaves on disk.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from medunlearn.cli.main import app

runner = CliRunner()
KILLED = 137
SALT = "issue-29-site-secret"


def invoke(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def build_world(root: Path) -> dict[str, Path]:
    """cohort (12 synthetic patients, 16 px), base (1 epoch), runs a and b (finetune, seeds 0 and 1)."""
    assert invoke("cohort", "synth", root / "archive", "--patients", "12", "--seed", "1",
                  "--image-size", "16").exit_code == 0
    res = invoke("cohort", "index", root / "archive", "--labels", root / "archive" / "labels.csv",
                 "--out", root / "cohort.csv", "--salt", "test-salt-1", "--workers", "1")
    assert res.exit_code == 0, res.output
    res = invoke("train", "--cohort", root / "cohort.csv", "--model", "small_cnn", "--epochs", "1",
                 "--image-size", "16", "--out", root / "base")
    assert res.exit_code == 0, res.output
    for name, seed in (("run_a", 0), ("run_b", 1)):
        res = invoke(*forget_args(root, root / name, seed))
        assert res.exit_code in (0, 3), res.output
    return {"root": root, "cohort": root / "cohort.csv", "base": root / "base", "run_a": root / "run_a",
            "run_b": root / "run_b"}


def forget_args(root: Path, out: Path, seed: int) -> list:
    return ["forget", "--cohort", root / "cohort.csv", "--model", root / "base", "--device", "ScannerX",
            "--method", "finetune", "--set", "epochs=0.2", "--seed", str(seed), "--out", out]


def killed_at(k: int, fn) -> tuple[int, int]:
    """(exit code of the child, os.replace/os.rename calls it made). k = 0: never killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        calls = [0]
        real_replace, real_rename = os.replace, os.rename

        def counted(real):
            def call(src, dst, *a, **kw):
                calls[0] += 1
                if calls[0] == k:
                    os._exit(KILLED)
                return real(src, dst, *a, **kw)
            return call

        os.replace, os.rename = counted(real_replace), counted(real_rename)
        try:
            fn()
        except BaseException:  # noqa: BLE001 - report and leave like a crash
            os.write(w, json.dumps(-1).encode())
            os._exit(1)
        os.write(w, json.dumps(calls[0]).encode())
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    data = os.read(r, 64)
    os.close(r)
    return os.waitstatus_to_exitcode(status), int(json.loads(data)) if data else -1


def leftovers(folder: Path, name: str) -> list[str]:
    """Hidden commit debris of output `name` in `folder` (temps, staging, .old, journals, locks)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((f".{name}.", f"..{name}.")))
