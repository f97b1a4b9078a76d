"""Report figures (matplotlib, Agg backend): each function returns PNG bytes, never touches the disk.

Legibility rules every figure follows: long tick labels are wrapped and, when crowded, rotated about their
end; titles are wrapped; legends sit outside the data; layout is constrained so nothing overlaps.
"""
from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

_DPI = 100
_COLORS = ("#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd")
_TITLE_WIDTH = 60


def _figure(width: float, height: float, rows: int = 1, sharex: bool = False):
    return plt.subplots(rows, 1, figsize=(width, height), layout="constrained", sharex=sharex, squeeze=rows == 1)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    plt.close(fig)
    return buf.getvalue()


def _title(ax, title: str) -> None:
    ax.set_title("\n".join(textwrap.wrap(title, _TITLE_WIDTH)) or title, fontsize=10)


def _category_axis(ax, x: np.ndarray, categories: Sequence[str]) -> None:
    """Tick labels wrapped at 14 characters; rotated 30° (anchored at their end) when they would collide."""
    labels = ["\n".join(textwrap.wrap(str(c), 14)) or str(c) for c in categories]
    widest = max((max(len(line) for line in lab.split("\n")) for lab in labels), default=0)
    crowded = len(labels) * widest > 60
    ax.set_xticks(x, labels, rotation=30 if crowded else 0, ha="right" if crowded else "center",
                  rotation_mode="anchor", fontsize=8)


def grouped_bars(categories: Sequence[str], series: Mapping[str, Sequence[float | None]], title: str,
                 ylabel: str = "%") -> bytes:
    """Bars per category, one colour per series (e.g. original / unlearned / retrained). None = missing."""
    fig, ax = _figure(max(5.0, 1.0 * len(categories) + 2.5), 3.6)
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(categories))
    for j, (name, values) in enumerate(series.items()):
        vals = [np.nan if v is None else float(v) for v in values]
        ax.bar(x + (j - (n - 1) / 2) * width, vals, width, label=name, color=_COLORS[j % len(_COLORS)])
    _category_axis(ax, x, categories)
    ax.set_ylabel(ylabel)
    _title(ax, title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def confusion(labels: Sequence[str], matrix: Sequence[Sequence[float]], title: str) -> bytes:
    """Confusion matrix heat map with counts; rows = true class, columns = predicted."""
    m = np.asarray(matrix, dtype=float)
    side = 0.7 * len(labels)
    fig, ax = _figure(max(4.0, side + 2.5), max(3.2, side + 2.0))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), list(labels), rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(len(labels)), list(labels), fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:g}", ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _title(ax, title)
    return _png(fig)


def histogram(counts: Mapping[str, float], title: str, xlabel: str) -> bytes:
    """Bar chart of a {category: count} record (e.g. PSG relabel histogram)."""
    fig, ax = _figure(max(4.5, 0.8 * len(counts) + 2.5), 3.4)
    x = np.arange(len(counts))
    ax.bar(x, [float(v) for v in counts.values()], color=_COLORS[1])
    _category_axis(ax, x, list(map(str, counts)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    _title(ax, title)
    return _png(fig)


def distributions(samples: Mapping[str, Sequence[float]], title: str, xlabel: str) -> bytes:
    """Overlaid histograms of score samples (e.g. MIA scores of forget vs test images)."""
    fig, ax = _figure(5.5, 3.4)
    for j, (name, values) in enumerate(samples.items()):
        ax.hist(np.asarray(values, dtype=float), bins=30, alpha=0.5, label=name, color=_COLORS[(j + 1) % len(_COLORS)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    _title(ax, title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


def trace_panels(steps: Sequence[float], panels: Sequence[Mapping], title: str, marked_step: float | None = None,
                 marked_label: str = "returned state", highlight: Sequence[bool] | None = None,
                 highlight_label: str = "") -> bytes:
    """Stacked panels over a shared step axis (the stop / guard trace).

    Each panel: {"title", "ylabel", "lines": [{"label", "values", "lo"?, "hi"?}], "band": (lo, hi, label) | None,
    "limits": [(y, label)]}. ``lo``/``hi`` shade an interval around a line; ``band`` shades the accepted range;
    ``limits`` draw dashed threshold lines. ``marked_step`` gets a vertical line in every panel; ``highlight``
    (N,) bools mark points (e.g. retain-repair checks) with an extra marker.
    """
    x = np.asarray(steps, dtype=float)
    fig, axes = _figure(8.0, 2.6 * len(panels) + 0.6, rows=len(panels), sharex=True)
    axes = np.asarray(axes).ravel()
    for k, (ax, panel) in enumerate(zip(axes, panels)):
        if panel.get("band"):
            lo, hi, label = panel["band"]
            ax.axhspan(lo, hi, color="#2ca02c", alpha=0.15, label=label)
        for j, line in enumerate(panel["lines"]):
            y = np.asarray([np.nan if v is None else float(v) for v in line["values"]], dtype=float)
            color = _COLORS[(j + 1) % len(_COLORS)]
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, color=color, label=line["label"])
            if line.get("lo") is not None and line.get("hi") is not None:
                ax.fill_between(x, np.asarray(line["lo"], dtype=float), np.asarray(line["hi"], dtype=float),
                                color=color, alpha=0.15, label=f"{line['label']} interval")
            if highlight is not None and any(highlight):
                hx = x[np.asarray(highlight, dtype=bool)]
                hy = y[np.asarray(highlight, dtype=bool)]
                ax.plot(hx, hy, linestyle="none", marker="x", markersize=6, color="#ff7f0e",
                        label=highlight_label if j == 0 else None)
        for y, label in panel.get("limits", []):
            ax.axhline(y, color="#d62728", linestyle="--", linewidth=1.1, label=label)
        if marked_step is not None:
            ax.axvline(marked_step, color="black", linestyle=":", linewidth=1.3,
                       label=f"{marked_label} (step {marked_step:g})" if k == 0 else None)
        ax.set_ylabel(panel.get("ylabel", "%"))
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1].set_xlabel("optimiser step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("\n".join(textwrap.wrap(title, 80)), fontsize=10)
    return _png(fig)
