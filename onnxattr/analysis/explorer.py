"""The interactive explorer: one self-contained HTML page (opens from disk, no server, no network)
for picking a target, reading its ranked sources under each estimator with their probe-resampling
intervals, comparing two models' maps on the same probe images, and browsing the similarity tree
and heatmap.

Everything is computed here, in Python, from the same :mod:`.space_view` the static report uses;
the page only draws. Data is embedded compactly so a 500-model space stays a few MB: the heatmap
as one byte per cell, each target's top-K sources as 16-bit positions and quantised affinities,
maps and probe images as small PNG thumbnails, all base64 in one JSON block.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxAttrError
from . import space_view
from .distances import ranking
from .evaluation import Oracle, read_oracle
from .space_view import (
    EstimatorView,
    ModelInfo,
    estimator_names,
    estimator_views,
    finite_or_none,
    probe_examples,
    rank_intervals,
    read_models,
    view_disagreements,
)

#: Quantisation levels: the top value of each type marks "not measured" (NaN).
U8_NAN, U16_NAN = 255, 65535
_DATA_MARK = "/*__EXPLORER_DATA__*/"


@dataclass(frozen=True)
class ExplorerResult:
    """The written page: where, how big, and what it holds."""

    path: Path
    size_bytes: int
    n_models: int
    estimators: list[str]


def _b64(a: np.ndarray, dtype: str) -> str:
    """Little-endian bytes of ``a`` as ``dtype``, base64: what the page reads as a typed array."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
                            .tobytes()).decode()


def quantise(values: np.ndarray, lo: float, hi: float, nan_code: int) -> np.ndarray:
    """``values`` in [lo, hi] as integers 0..nan_code-1 (clipped); NaN as ``nan_code``."""
    v = np.asarray(values, dtype=np.float64)
    span = hi - lo if hi > lo else 1.0
    q = np.rint((np.clip(np.nan_to_num(v, nan=lo), lo, hi) - lo) / span * (nan_code - 1))
    return np.where(np.isnan(v), nan_code, q).astype(np.int64)


def dequantise(q: np.ndarray, lo: float, hi: float, nan_code: int) -> np.ndarray:
    """The inverse of :func:`quantise` (as the page computes it)."""
    q = np.asarray(q, dtype=np.float64)
    span = hi - lo if hi > lo else 1.0
    return np.where(q == nan_code, np.nan, lo + q / (nan_code - 1) * span)


def _png(pixels: np.ndarray, palette: np.ndarray | None = None) -> str:
    """A PNG, base64: RGB ``pixels``, or palette indices with ``palette`` (K, 3) in 0..255."""
    from PIL import Image

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if palette is None:
        img = Image.fromarray(pixels)
    else:
        img = Image.frombytes("P", (pixels.shape[1], pixels.shape[0]), pixels.tobytes())
        img.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def _shrink(a: np.ndarray, side: int) -> np.ndarray:
    """Area-average an (H, W[, C]) array down to at most ``side`` pixels a side."""
    from PIL import Image

    if max(a.shape[:2]) <= side:
        return a
    if a.ndim == 3:
        return np.asarray(Image.fromarray(a.astype(np.uint8)).resize((side, side), Image.BOX))
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((side, side),
                                                                             Image.BOX))


#: Colours a map thumbnail has: enough to read, few enough to compress (a palette PNG).
MAP_LEVELS = 32


def map_thumbnail(a: np.ndarray, side: int = 48) -> str:
    """A map as a palette PNG (base64): signed maps on a symmetric blue-white-red scale,
    magnitudes white-to-red, both clipped at the 99th percentile of |a| (the report's colours),
    in :data:`MAP_LEVELS` steps."""
    from matplotlib import colormaps

    a = np.nan_to_num(np.asarray(a, dtype=np.float64))
    if a.ndim == 3:  # (C, H, W) or (H, W, C) maps: summed over channels
        a = a.sum(axis=0 if a.shape[0] <= 4 else -1)
    a = _shrink(a, side).astype(np.float64)
    lim = float(np.percentile(np.abs(a), 99)) or 1.0
    signed = a.min() < 0
    t = np.clip((a + lim) / (2 * lim) if signed else a / lim, 0, 1)
    palette = colormaps["bwr" if signed else "Reds"](np.linspace(0, 1, MAP_LEVELS))[:, :3]
    return _png(np.rint(t * (MAP_LEVELS - 1)), (palette * 255).round())


def _scale(view: EstimatorView) -> tuple[float, float]:
    """The affinity range to quantise over: off-diagonal values and their intervals."""
    v = view.matrix.affinity().values
    parts = [v[~np.eye(len(v), dtype=bool)]]
    if view.stability is not None:
        parts += [view.stability.low.ravel(), view.stability.high.ravel()]
    flat = np.concatenate(parts)
    flat = flat[np.isfinite(flat)]
    if not flat.size:
        return 0.0, 1.0
    return float(flat.min()), float(flat.max())


def _estimator_data(view: EstimatorView, index: Mapping[str, int], top_k: int,
                    inverse: Mapping[str, str]) -> dict[str, Any]:
    m = view.matrix.affinity()
    n = len(m.names)
    k = min(top_k, n - 1)
    lo, hi = _scale(view)
    order = np.array([[m.index(s) for s, _ in ranking(m, t)[:k]] for t in m.names],
                     dtype=np.int64).reshape(n, k)
    rows = np.arange(n)[:, None]
    out: dict[str, Any] = {
        "name": m.estimator, "desc": view.description, "ids": [index[t] for t in m.names],
        "excluded": list(m.excluded), "lo": lo, "hi": hi, "k": k,
        "heat": _b64(quantise(m.values, lo, hi, U8_NAN), "u1"),
        "order": _b64(order, "<u2"),
        "val": _b64(quantise(m.values[rows, order], lo, hi, U16_NAN), "<u2"),
        "tree": {"z": [[int(a), int(b), round(float(h), 6)] for a, b, h, _ in view.linkage],
                 "leaves": view.leaf_order},
        "stab": None, "eval": None,
    }
    st = view.stability
    if st is not None:
        iv = np.array([rank_intervals(st, i, order[i]) for i in range(n)]).reshape(n, k, 2)
        tied = (view.ties.tied[:, :k] if view.ties is not None
                else np.zeros((n, k), dtype=bool))
        out["stab"] = {
            "n_boot": st.n_boot, "n_images": st.n_images, "resampling": st.resampling,
            "note": st.note(),
            "agreement": finite_or_none(st.agreement, 3),
            "top1": [finite_or_none(v, 3) for v in st.top1_kept],
            "rho": [finite_or_none(v, 3) for v in st.halves_rho],
            "alo": _b64(quantise(st.low[rows, order], lo, hi, U16_NAN), "<u2"),
            "ahi": _b64(quantise(st.high[rows, order], lo, hi, U16_NAN), "<u2"),
            "rlo": _b64(iv[..., 0], "<u2"), "rhi": _b64(iv[..., 1], "<u2"),
            "tied": _b64(tied, "u1"),
        }
    ev = view.evaluation
    if ev is not None:
        ci = view.evaluation_ci
        ks = [q for q in (1, 3, 5) if q <= len(ev.k)]
        out["eval"] = {
            "top": ev.top,
            "p": {str(q): finite_or_none(ev.precision[q - 1]) for q in ks},
            "random": {str(q): finite_or_none(ev.random_precision[q - 1]) for q in ks},
            "pci": ({str(q): [finite_or_none(x) for x in v] for q, v in ci.precision.items()}
                    if ci else None),
            "rho": finite_or_none(ev.spearman),
            "rhoci": [finite_or_none(x) for x in ci.spearman] if ci else None,
            "rho_t": {str(index[inverse.get(t, t)]): finite_or_none(r, 3)
                      for t, r in ev.spearman_per_target.items() if inverse.get(t, t) in index},
        }
    return out


def _oracle_data(oracle: Oracle, index: Mapping[str, int], inverse: Mapping[str, str],
                 top: int) -> dict[str, Any]:
    """Measured transfer per target: [[source index, value], ...] over the space's models."""
    rows: dict[str, list[list[float]]] = {}
    for i, t in enumerate(oracle.targets):
        ti = index.get(inverse.get(t, t))
        if ti is None:
            continue
        cells = [[index[inverse.get(s, s)], float(f"{oracle.values[i, j]:.4g}")]
                 for j, s in enumerate(oracle.sources)
                 if s != t and inverse.get(s, s) in index and math.isfinite(oracle.values[i, j])]
        if cells:
            rows[str(ti)] = cells
    return {"top": top, "rows": rows}


def explorer_data(space: str | Path, views: Sequence[EstimatorView], models: Sequence[ModelInfo],
                  oracle: Oracle | None = None, *, mapping: Mapping[str, str] | None = None,
                  top: int = 5, map_method: str | None = None, n_images: int = 4,
                  top_k: int = 50, thumb: int = 48) -> dict[str, Any]:
    """What the page embeds (JSON-ready): the models, per estimator its heatmap, top-``top_k``
    rankings with intervals, tree and evaluation, the measured transfers, and ``n_images``
    probe images with every model's ``map_method`` maps of them as ``thumb``-pixel PNGs."""
    if top_k < 1:
        raise OnnxAttrError(f"`top_k` must be at least 1, got {top_k}")
    if len(models) >= U16_NAN:
        raise OnnxAttrError(f"the explorer holds at most {U16_NAN - 1} models, this space has "
                            f"{len(models)}; explore a smaller space")
    index = {m.name: i for i, m in enumerate(models)}
    inverse = {v: k for k, v in (mapping or {}).items()}
    maps: dict[str, Any] | None = None
    if map_method is not None:
        idx, images, per_model = probe_examples(space, [m.name for m in models], map_method,
                                                n_images)
        maps = {"method": map_method, "probe_index": idx,
                "images": [_png(_shrink(img, 2 * thumb)) for img in images],
                "thumbs": {str(index[n]): [map_thumbnail(a, thumb) for a in arr]
                           for n, arr in per_model.items()}}
    return {
        "space": Path(space).name,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "models": [{"n": m.name, "f": m.framework, "t": m.task, "e": m.encoder_node,
                    "s": "x".join(map(str, m.input_size)) if m.input_size else "",
                    "v": m.verify_rel_err, "m": list(m.methods)} for m in models],
        "estimators": [_estimator_data(v, index, top_k, inverse) for v in views],
        "oracle": _oracle_data(oracle, index, inverse, top) if oracle is not None else None,
        "maps": maps,
        "agreement": _agreement_data(views, index),
    }


def _agreement_data(views: Sequence[EstimatorView], index: Mapping[str, int]) -> dict[str, Any]:
    """The ≠ mark per target (:func:`~onnxattr.analysis.space_view.view_disagreements`): which
    estimators were compared and, by model index, each one's first source, the lowest Kendall τ
    and whether they disagree."""
    compared, dis = view_disagreements(views)
    return {"estimators": compared,
            "rows": {str(index[d.target]): {"first": [index[d.first[e]] for e in d.first],
                                            "tau": finite_or_none(d.min_tau, 3),
                                            "disagree": d.disagree, "line": d.line()}
                     for d in dis if d.target in index}}


def render(data: Mapping[str, Any]) -> str:
    """The page: the packaged template with ``data`` embedded (``</`` escaped for the script)."""
    template = (resources.files("onnxattr.analysis") / "templates" / "explorer.html").read_text(
        encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return template.replace(_DATA_MARK, payload)


def write_explorer(space: str | Path, out: str | Path = "explorer.html",
                   oracle: str | Path | Oracle | None = None,
                   estimators: Sequence[str] | None = None, *,
                   views: Sequence[EstimatorView] | None = None,
                   models: Sequence[ModelInfo] | None = None,
                   mapping: Mapping[str, str] | None = None, top: int = 5,
                   map_method: str | None = None, n_images: int = 4, top_k: int = 50,
                   thumb: int = 48, **view_params: Any) -> ExplorerResult:
    """Write the explorer of ``space`` to ``out``: every estimator of the space (or
    ``estimators``; ``views`` when already computed, as the report does), with ``oracle``
    (CSV path or Oracle) its measured transfers. ``view_params`` go to
    :func:`~onnxattr.analysis.space_view.estimator_views` (``bootstrap``, ``linkage``, ``lam``,
    ``use_cache``, estimator parameters)."""
    space, out = Path(space), Path(out)
    orc = read_oracle(oracle) if isinstance(oracle, (str, Path)) else oracle
    models = list(models) if models is not None else read_models(space)
    if views is None:
        names = estimator_names(space, estimators)
        views = list(estimator_views(space, names, orc, mapping=mapping, top=top, **view_params))
        map_method = map_method or space_view.map_method(names, models)
    elif map_method is None:
        map_method = space_view.map_method([v.matrix.estimator for v in views], models)
    data = explorer_data(space, views, models, orc, mapping=mapping, top=top,
                         map_method=map_method, n_images=n_images, top_k=top_k, thumb=thumb)
    page = render(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return ExplorerResult(out, out.stat().st_size, len(models),
                          [v.matrix.estimator for v in views])
