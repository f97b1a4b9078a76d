"""Issue 15 items 5 and 6: interrupted commits keep the previous result; concurrent writers get one line."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medunlearn import commit
from medunlearn.cli.main import app
from medunlearn.commit import output_lock, recover_output, staging_dir
from medunlearn.errors import OutputLockedError


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so no handler tidies up after it."""


def _write(out: Path, text: str) -> None:
    with staging_dir(out, overwrite=True) as tmp:
        (tmp / "model.txt").write_text(text)


def _kill_at_replace(monkeypatch, n: int) -> None:
    """Make the n-th os.replace call (1-based) die before it renames anything."""
    real, calls = os.replace, {"n": 0}

    def replace(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed()
        return real(src, dst, *a, **k)

    monkeypatch.setattr(commit.os, "replace", replace)


@pytest.mark.parametrize("n", [1, 2, 3])  # journal, previous -> .old, staging -> final
def test_previous_result_survives_a_kill_at_every_rename(tmp_path: Path, monkeypatch, n: int) -> None:
    out = tmp_path / "run"
    _write(out, "v1")
    _kill_at_replace(monkeypatch, n)
    with pytest.raises(Killed):
        _write(out, "v2")
    monkeypatch.undo()
    # right after the kill the old result exists either in place or set aside, never lost
    assert (out / "model.txt").exists() or (tmp_path / ".run.old" / "model.txt").read_text() == "v1"
    recover_output(out)
    assert (out / "model.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # staging, .old and lock all cleaned up
    _write(out, "v3")
    assert (out / "model.txt").read_text() == "v3"


def test_next_run_restores_the_set_aside_result_before_refusing(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    _write(out, "v1")
    _kill_at_replace(monkeypatch, 3)  # killed between "run -> .run.old" and "staging -> run"
    with pytest.raises(Killed):
        _write(out, "v2")
    monkeypatch.undo()
    with pytest.raises(commit.OutputExistsError):  # without --overwrite the restored result is protected
        commit.prepare_out_dir(out)
    assert (out / "model.txt").read_text() == "v1"


def test_stale_staging_folders_are_removed_and_reported(tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    stale = tmp_path / ".run.abc123.staging"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 100)
    other = tmp_path / ".other.abc.staging"
    other.mkdir()
    with caplog.at_level("WARNING", logger="medunlearn"):
        _write(out, "v1")
    assert not stale.exists() and other.exists()  # only this output's leftovers
    assert "unfinished staging" in caplog.text


def test_files_and_folder_are_fsynced_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(commit.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                        real_fsync(fd))[1])
    real_replace = os.replace
    order: list[str] = []
    monkeypatch.setattr(commit.os, "replace", lambda s, d: (order.append(f"replace:{len(synced)}"),
                                                            real_replace(s, d))[1])
    _write(tmp_path / "run", "v1")
    assert any(s.endswith("model.txt") for s in synced)
    first_replace_after = int(order[0].split(":")[1])
    assert any(s.endswith("model.txt") for s in synced[:first_replace_after])
    assert str(tmp_path) in synced  # the parent folder, so the rename itself is durable


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with output_lock(out):
        with pytest.raises(OutputLockedError, match="another medunlearn run"):
            _write(out, "loser")
    assert not out.exists()
    _write(out, "later")  # the lock is released with the holder
    assert (out / "model.txt").read_text() == "later"
    assert not (tmp_path / ".run.lock").exists()


def test_cli_loser_exits_2_with_one_line(tmp_path: Path, runs) -> None:
    out = runs["root"] / "merged"
    with output_lock(out):
        res = CliRunner().invoke(app, ["merge", *map(str, runs["runs"]), "--base", str(runs["base"]),
                                       "--method", "linear", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert res.output.strip().startswith("Error:") and "another medunlearn run" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) <= 2
