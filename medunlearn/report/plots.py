"""Report figures (matplotlib, Agg backend): each function returns PNG bytes, never touches the disk."""
from __future__ import annotations

import io
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_DPI = 80
_COLORS = ("#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=_DPI)
    plt.close(fig)
    return buf.getvalue()


def grouped_bars(categories: Sequence[str], series: Mapping[str, Sequence[float | None]], title: str,
                 ylabel: str = "%") -> bytes:
    """Bars per category, one colour per series (e.g. original / unlearned / retrained). None = missing."""
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(categories) + 2), 3.2))
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(categories))
    for j, (name, values) in enumerate(series.items()):
        vals = [np.nan if v is None else float(v) for v in values]
        ax.bar(x + (j - (n - 1) / 2) * width, vals, width, label=name, color=_COLORS[j % len(_COLORS)])
    ax.set_xticks(x, list(categories), rotation=20 if len(categories) > 4 else 0, ha="right" if len(categories) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def confusion(labels: Sequence[str], matrix: Sequence[Sequence[float]], title: str) -> bytes:
    """Confusion matrix heat map with counts; rows = true class, columns = predicted."""
    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(labels) + 1.5, 0.6 * len(labels) + 1.6))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), list(labels), rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), list(labels))
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:g}", ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


def histogram(counts: Mapping[str, float], title: str, xlabel: str) -> bytes:
    """Bar chart of a {category: count} record (e.g. PSG relabel histogram)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(counts) + 2), 3.0))
    ax.bar(list(map(str, counts)), [float(v) for v in counts.values()], color=_COLORS[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return _png(fig)


def distributions(samples: Mapping[str, Sequence[float]], title: str, xlabel: str) -> bytes:
    """Overlaid histograms of score samples (e.g. MIA scores of forget vs test images)."""
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    for j, (name, values) in enumerate(samples.items()):
        ax.hist(np.asarray(values, dtype=float), bins=30, alpha=0.5, label=name, color=_COLORS[(j + 1) % len(_COLORS)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)
