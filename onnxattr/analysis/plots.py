"""Figures: dendrograms, tree-ordered heatmaps, P@K / R@K curves.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend state), so it works
headless and inside other people's processes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.cluster import hierarchy

from ..errors import OnnxAttrError
from .distances import LabelledMatrix
from .evaluation import Evaluation


def _new(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def check_image_path(path: str | Path) -> None:
    """Refuse an output path matplotlib cannot write, before any work is done."""
    path = Path(path)
    formats = FigureCanvasAgg.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise OnnxAttrError(f"cannot draw to {path}: unknown image format {path.suffix!r}; "
                            f"use .png or .svg (or {', '.join(sorted(set(formats) - {'png', 'svg'}))})")
    if path.is_dir():
        raise OnnxAttrError(f"{path} is a folder; give an image file name")


def save(fig: Figure, path: str | Path | None) -> bytes:
    """Save to ``path`` (format from its suffix, e.g. .png/.svg); return PNG bytes if no path."""
    if path is None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        return buf.getvalue()
    path = Path(path)
    check_image_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return b""


def dendrogram_figure(z: np.ndarray, names: Sequence[str], title: str = "") -> Figure:
    fig = _new(7, 0.3 * len(names) + 1.5)
    ax = fig.add_subplot()
    hierarchy.dendrogram(z, labels=list(names), orientation="left", ax=ax)
    ax.set_xlabel("merge height")
    ax.set_title(title)
    return fig


def heatmap_figure(matrix: LabelledMatrix, order: Sequence[int] | None = None,
                   title: str = "") -> Figure:
    """The matrix with rows/columns in ``order`` (e.g. tree leaves); the diagonal is masked
    because self-similarity would dominate the colour scale."""
    order = list(range(len(matrix.names))) if order is None else list(order)
    vals = matrix.values[np.ix_(order, order)].copy()
    np.fill_diagonal(vals, np.nan)
    vals[~np.isfinite(vals)] = np.nan
    n = len(order)
    size = max(4.0, 0.35 * n + 2)
    fig = _new(size + 1, size)
    ax = fig.add_subplot()
    im = ax.imshow(vals, cmap="viridis" if matrix.kind == "affinity" else "viridis_r")
    labels = [matrix.names[i] for i in order]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    fig.colorbar(im, ax=ax, label=matrix.kind, shrink=0.8)
    ax.set_title(title or f"{matrix.estimator} {matrix.kind}")
    return fig


def curves_figure(evals: Sequence[Evaluation]) -> Figure:
    """P@K and R@K per estimator, with the random expectation and the oracle's own curve."""
    fig = _new(11, 4.5)
    axes = fig.subplots(1, 2)
    ref = evals[0]
    for ax, key, label in ((axes[0], "precision", "P@K"), (axes[1], "recall", "R@K")):
        for e in evals:
            ax.plot(e.k, getattr(e, key), marker="o", ms=3, label=e.estimator)
        ax.plot(ref.k, getattr(ref, f"random_{key}"), "k--", label="random")
        ax.plot(ref.k, getattr(ref, f"oracle_{key}"), "r:", label="oracle")
        ax.set_xlabel("K")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{label} (relevant = oracle top-{ref.top})")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    return fig


def example_maps_figure(images: np.ndarray, maps: dict[str, np.ndarray], method: str) -> Figure:
    """Probe images (top row) and each model's ``method`` maps of them (one row per model),
    signed maps on a symmetric diverging scale, magnitudes from white."""
    n_img, rows = len(images), len(maps) + 1
    fig = _new(1.3 * n_img + 2.2, 1.3 * rows + 0.4)
    axes = np.asarray(fig.subplots(rows, n_img, squeeze=False))
    for j, img in enumerate(images):
        axes[0, j].imshow(img)
    axes[0, 0].set_ylabel("probe", rotation=0, ha="right", fontsize=8)
    for i, (name, m) in enumerate(maps.items(), start=1):
        for j in range(n_img):
            a = np.nan_to_num(m[j].astype(np.float64))
            lim = float(np.percentile(np.abs(a), 99)) or 1.0
            if a.min() < 0:
                axes[i, j].imshow(a, cmap="bwr", vmin=-lim, vmax=lim)
            else:
                axes[i, j].imshow(a, cmap="Reds", vmin=0, vmax=lim)
        axes[i, 0].set_ylabel(name, rotation=0, ha="right", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{method} maps of {n_img} probe images", fontsize=10)
    return fig
