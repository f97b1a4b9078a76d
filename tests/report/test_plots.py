"""Report figures: PNG bytes, and tick labels that never overlap (long device / site names)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from medunlearn.report import plots
from medunlearn.report.trace import read_trace, trace_figure

PNG = b"\x89PNG\r\n\x1a\n"
NAMES = ["MAGNETOM Avanto", "SIGNA Explorer", "Ingenia Elition X", "ScannerX", "Synthetic University Clinic",
         "Synthetic General Hospital"]


def overlaps(labels) -> int:
    boxes = [t.get_window_extent() for t in labels if t.get_text()]
    return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


@pytest.mark.parametrize("n", [2, 4, 6])
def test_category_tick_labels_do_not_overlap(n):
    fig, ax = plots._figure(max(5.0, 1.0 * n + 2.5), 3.6)
    x = np.arange(n)
    ax.bar(x, np.ones(n))
    plots._category_axis(ax, x, NAMES[:n])
    fig.canvas.draw()
    assert overlaps(ax.get_xticklabels()) == 0
    plt.close(fig)


def test_naive_labels_would_overlap():  # the check above can fail: the same names unwrapped, unrotated do
    fig, ax = plt.subplots(figsize=(7.4, 3.2))  # the old layout: 0.9 inch per category, 10 pt labels
    ax.set_xticks(np.arange(6), NAMES)
    fig.canvas.draw()
    assert overlaps(ax.get_xticklabels()) > 0
    plt.close(fig)


def test_every_figure_is_a_png():
    assert plots.grouped_bars(NAMES, {"train": [50.0] * 6, "test": [None] * 6}, "Policy: device = ScannerX: "
                              "accuracy per device, a title long enough to need wrapping").startswith(PNG)
    assert plots.confusion(["a", "b"], [[1, 2], [3, 4]], "cm").startswith(PNG)
    assert plots.histogram({"normal": 3, "cyst": 2}, "h", "class").startswith(PNG)
    assert plots.distributions({"forget": [0.1, 0.2], "test": [0.3, 0.5]}, "d", "score").startswith(PNG)


def test_trace_reads_both_column_names_and_skips_junk(tmp_path):
    (tmp_path / "trace.csv").write_text("step,val_forget_acc,val_forget_conf,val_retain_acc,decision\n"
                                        "0,80,90,97,start\n1,35.5,,96.9,new best\nx,1,1,1,bad row\n")
    rows = read_trace(tmp_path / "trace.csv")
    assert [(r["step"], r["forget_acc"], r["forget_conf"], r["retain_acc"]) for r in rows] == [
        (0.0, 80.0, 90.0, 97.0), (1.0, 35.5, None, 96.9)]
    assert rows[1]["decision"] == "new best"
    assert read_trace(tmp_path / "missing.csv") == []


def test_trace_figure_for_equivalence_and_traversal(tmp_path):
    (tmp_path / "trace.csv").write_text(
        "step,phase,retain_acc,acc_gap,acc_gap_lo,acc_gap_hi,auc,auc_lo,auc_hi,decision\n"
        "0,original,97,20,10,30,70,60,80,\n3,method,96.8,1,-4,6,51,45,57,new best (criteria met)\n")
    acc = {"met": True, "step": 3, "trace_file": "../../etc/trace.csv",  # a path never leaves the run folder
           "checks": [{"name": "retain_accuracy", "op": ">=", "threshold": 96.5, "value": 96.8, "passed": True}]}
    block = trace_figure(tmp_path, acc)
    assert block is not None and block["png"].startswith(PNG) and "2 checks, returned step 3" in block["title"]
    assert trace_figure(tmp_path, None) is None
    assert trace_figure(tmp_path / "nowhere", acc) is None
