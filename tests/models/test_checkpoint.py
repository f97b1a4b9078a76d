"""Safe checkpoints: atomic writes, strict loads, refusal of executable pickles."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from medunlearn.errors import CheckpointError, OutputExistsError
from medunlearn.models import checkpoint as ck
from medunlearn.models.zoo import create_model
from medunlearn.provenance import sha256_file


def _model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_model("small_cnn", 3, image_size=16, width=4, **kw)


def _digest(folder) -> dict:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def test_files_and_meta(tmp_path) -> None:
    out = ck.save_checkpoint(tmp_path / "c", _model(), {"kind": "retrain", "seed": 7, "config": {"lr": 0.1}})
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.safetensors", "provenance.json"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "retrain" and meta["seed"] == 7 and meta["in_channels"] == 1 and meta["image_size"] == 16
    assert meta["architecture"]["name"] == "small_cnn" and meta["changelog"] == []
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seed"] == 7 and prov["config"] == {"lr": 0.1} and "torch" in prov["environment"]
    assert ck.model_sha256(out) == sha256_file(out / "model.safetensors")


def test_bn_buffers_round_trip(tmp_path) -> None:
    m = _model()
    m.train()
    m(torch.rand(8, 1, 16, 16))
    ck.save_checkpoint(tmp_path / "c", m, {})
    m2, _ = ck.load_checkpoint(tmp_path / "c")
    assert torch.equal(m.features.conv1[1].running_mean, m2.features.conv1[1].running_mean)
    assert int(m2.features.conv1[1].num_batches_tracked) == 1


def test_overwrite_refused_then_allowed(tmp_path) -> None:
    ck.save_checkpoint(tmp_path / "c", _model(0), {})
    with pytest.raises(OutputExistsError):
        ck.save_checkpoint(tmp_path / "c", _model(1), {})
    ck.save_checkpoint(tmp_path / "c", _model(1), {}, overwrite=True)
    loaded, _ = ck.load_checkpoint(tmp_path / "c")
    assert ck.state_distance(loaded, _model(1)) == 0.0


def test_interrupted_save_keeps_old_checkpoint(tmp_path, monkeypatch) -> None:
    ck.save_checkpoint(tmp_path / "c", _model(0), {})
    before = _digest(tmp_path / "c")

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)  # half-written file, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(tmp_path / "c", _model(1), {}, overwrite=True)
    assert _digest(tmp_path / "c") == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no staging debris left behind
    loaded, _ = ck.load_checkpoint(tmp_path / "c")
    assert ck.state_distance(loaded, _model(0)) == 0.0


def test_load_does_not_modify_input(tmp_path) -> None:
    ck.save_checkpoint(tmp_path / "c", _model(), {})
    before = _digest(tmp_path / "c")
    ck.load_checkpoint(tmp_path / "c")
    assert _digest(tmp_path / "c") == before


def test_corrupt_and_missing(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="Expected a checkpoint directory"):
        ck.load_checkpoint(tmp_path / "nope")
    d = ck.save_checkpoint(tmp_path / "c", _model(), {})
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="Expected a valid safetensors file"):
        ck.load_checkpoint(d)
    w.unlink()
    with pytest.raises(CheckpointError, match="Expected weights"):
        ck.load_checkpoint(d)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="Expected valid JSON"):
        ck.load_checkpoint(d)
    (d / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.load_checkpoint(d)


def test_unknown_architecture_and_mismatch(tmp_path) -> None:
    d = ck.save_checkpoint(tmp_path / "c", _model(), {})
    meta = json.loads((d / "meta.json").read_text())
    meta["architecture"]["name"] = "small_cn"
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match='Did you mean "small_cnn"'):
        ck.load_checkpoint(d)
    meta["architecture"]["name"] = "small_cnn"
    meta["architecture"]["kwargs"]["width"] = 8  # weights were saved at width 4
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="to match its weights file"):
        ck.load_checkpoint(d)
    meta["architecture"]["name"] = "allcnn"
    meta["architecture"]["kwargs"]["width"] = 4
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="to match its weights file|missing"):
        ck.load_checkpoint(d)


class _Hostile:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"head.weight": _Hostile(str(marker))}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        ck.import_state_dict(bad)
    assert not marker.exists()
    torch.save({"head.weight": _Hostile(str(marker))}, tmp_path / "evil2.pt")  # zip-format pickle too
    with pytest.raises(CheckpointError, match="weights_only"):
        ck.import_state_dict(tmp_path / "evil2.pt")
    assert not marker.exists()


def test_import_plain_state_dict(tmp_path) -> None:
    m = _model(3)
    torch.save({"state_dict": m.state_dict()}, tmp_path / "w.pt")
    state = ck.import_state_dict(tmp_path / "w.pt")
    fresh = ck.load_state_into(_model(4), state)
    assert ck.state_distance(fresh, m) == 0.0
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="mapping of names to tensors"):
        ck.import_state_dict(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.import_state_dict(tmp_path / "missing.pt")


def test_state_distance_ignores_bn_stats(tmp_path) -> None:
    a = _model(0)
    b = _model(0)
    with torch.no_grad():
        b.head.weight[0, 0] += 3.0
        b.head.bias[1] -= 4.0
        b.features.conv1[1].running_mean += 100.0  # statistics, not weights
    assert ck.state_distance(a, b) == pytest.approx(5.0)
    assert ck.state_distance(a.state_dict(), b.state_dict()) == pytest.approx(5.0)
    ck.save_checkpoint(tmp_path / "a", a, {})
    assert ck.state_distance(tmp_path / "a", b) == pytest.approx(5.0)
    with pytest.raises(CheckpointError, match="same architecture"):
        ck.state_distance(a, create_model("allcnn", 3, width=4))
