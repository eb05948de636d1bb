"""How two models' attribution maps are compared, as a recorded choice, and hub corrections.

The paper compares maps by their per-image cosine at probe resolution. That is the reference and
stays the meaning of a bare method name (``elrp``). Across architectures, strides and input sizes,
pixel-wise cosine mostly measures high-frequency structure and a shared centre/edge bias, so a
comparison can be qualified with options appended to the method name, each separated by ``+``
(canonical order, the name is also the cache key and the label of every result)::

    grad_input+abs+s2+g16+rank+hub

========  =================================================================================
``abs``   magnitude maps |A| instead of signed ones
``sX``    Gaussian smoothing with sigma = X pixels *of the model's input*; at probe resolution
          sigma = X · S / H_i, so a model that saw the probe at 64 px is smoothed 3.5x more
          than one that saw it at 224 px (its map carries no finer detail anyway)
``gN``    average-pool every map onto a common N x N grid (area weights, any S)
``centre`` subtract each map's own mean (per image): cosine becomes Pearson correlation
``rank``  replace each map by its ranks (per image): cosine becomes Spearman correlation
``hub``   remove what every model of the space shares: subtract the space's mean signature
          (mean over models of the per-image unit maps) and take cosines of the residuals
``cslsK`` CSLS (Conneau et al. 2018): 2·A_ij − r_i − r_j, r_i = mean of row i's top-K
========  =================================================================================

``hub`` and ``cslsK`` are *corrections of the affinity matrix*, also valid after any feature
estimator (``cka+hub``). Both need only the cached pairwise matrix: with signatures x_i (the
concatenated unit maps / sqrt(Np)), G = [x_i·x_j] is what the engine caches; subtracting the mean
signature m = mean_i x_i gives (x_i − m)·(x_j − m) = G_ij − r_i − r_j + g (r = row means of G,
g = its grand mean), the double-centred Gram. Adding one model still costs N new pairs; the
correction is O(N²) arithmetic on numbers already there, and no map is read again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata

from ..errors import OnnxAttrError

MAP_OPTIONS = "abs, sX (smoothing, model-input pixels), gN (grid), centre, rank"
CORRECTIONS = "hub, cslsK"


@dataclass(frozen=True)
class MapComparison:
    """Per-image transform of a (S, S) map before the cosine. Default = the paper's comparison."""

    magnitude: bool = False
    smooth: float = 0.0  # sigma in model-input pixels; 0 = none
    grid: int = 0  # common grid cells per side; 0 = probe resolution
    centre: bool = False
    rank: bool = False

    def __post_init__(self) -> None:
        if self.smooth < 0 or not math.isfinite(self.smooth):
            raise OnnxAttrError(f"smoothing sigma must be >= 0, not {self.smooth}")
        if self.grid < 0:
            raise OnnxAttrError(f"grid size must be >= 1, not {self.grid}")

    @property
    def is_reference(self) -> bool:
        return self == MapComparison()

    def tokens(self) -> list[str]:
        out = ["abs"] if self.magnitude else []
        if self.smooth:
            out.append(f"s{self.smooth:g}")
        if self.grid:
            out.append(f"g{self.grid}")
        if self.rank:
            out.append("rank")
        elif self.centre:
            out.append("centre")
        return out

    def params(self) -> dict[str, Any]:
        return {
            "magnitude": self.magnitude,
            "smooth_model_px": self.smooth,
            "grid": self.grid,
            "centre": self.centre or self.rank,
            "rank": self.rank,
        }

    def describe(self) -> str:
        """Words for the report: how the maps are compared."""
        parts = ["|A|" if self.magnitude else "signed maps"]
        if self.smooth:
            parts.append(f"Gaussian σ = {self.smooth:g} model-input px")
        if self.grid:
            parts.append(f"pooled to {self.grid}x{self.grid}")
        parts.append(
            "Spearman per image"
            if self.rank
            else "Pearson per image"
            if self.centre
            else "cosine per image"
        )
        return ", ".join(parts)

    def transform(self, maps: np.ndarray, input_size: Sequence[int] | None = None) -> np.ndarray:
        """(n, S, S) maps of one model -> (n, P) float32 rows, before normalisation.

        ``input_size`` (H, W) of the model sets the smoothing scale; without it the maps are
        taken to be at model resolution (sigma in probe pixels)."""
        x = np.array(maps, dtype=np.float32)
        x[~np.isfinite(x).all(axis=tuple(range(1, x.ndim)))] = 0.0  # as the reference: cosine 0
        if self.magnitude:
            x = np.abs(x)
        if self.smooth:
            s = x.shape[-1]
            side = min(input_size) if input_size else s
            sigma = self.smooth * s / side
            x = gaussian_filter(x, sigma=(0, sigma, sigma), mode="nearest").astype(np.float32)
        if self.grid:
            x = pool_grid(x, self.grid)
        x = x.reshape(len(x), -1)
        if self.rank:
            x = rankdata(x, axis=1).astype(np.float32)
        if self.centre or self.rank:
            x = x - x.mean(axis=1, keepdims=True)
        return x


def pool_matrix(size: int, cells: int) -> np.ndarray:
    """(cells, size) area weights: row c averages the part of [0, size) under cell c (cells of
    width size/cells, fractional pixels weighted by overlap), so any S pools to any N <= S."""
    if cells > size:
        raise OnnxAttrError(
            f"grid {cells} is finer than the {size}-pixel maps; use g{size} or less"
        )
    edges = np.arange(cells + 1) * size / cells
    px = np.arange(size)
    lo = np.maximum(edges[:-1, None], px[None, :])
    hi = np.minimum(edges[1:, None], px[None, :] + 1)
    w = np.clip(hi - lo, 0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def pool_grid(maps: np.ndarray, cells: int) -> np.ndarray:
    """(n, S, S) -> (n, cells, cells) area averages."""
    p = pool_matrix(maps.shape[-1], cells)
    q = p if maps.shape[-2] == maps.shape[-1] else pool_matrix(maps.shape[-2], cells)
    return np.einsum("ch,nhw,dw->ncd", q, maps, p, optimize=True)


# --------------------------------------------------------------------------- name parsing
@dataclass(frozen=True)
class EstimatorSpec:
    """A parsed estimator name: base estimator, map comparison, affinity correction."""

    base: str
    comparison: MapComparison = MapComparison()
    correction: str = ""  # "", "hub" or "csls"
    csls_k: int = 0

    @property
    def inner(self) -> str:
        """The name without the correction: what the pairwise engine computes and caches."""
        return "+".join([self.base, *self.comparison.tokens()])

    @property
    def name(self) -> str:
        tail = {"": [], "hub": ["hub"], "csls": [f"csls{self.csls_k}"]}[self.correction]
        return "+".join([self.inner, *tail])

    def params(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "comparison": self.comparison.params(),
            "correction": self.correction or None,
            **({"csls_k": self.csls_k} if self.correction == "csls" else {}),
        }


def describe_correction(spec: EstimatorSpec) -> str:
    if spec.correction == "hub":
        return "; hub removed (space's mean signature subtracted, then cosine)"
    if spec.correction == "csls":
        return f"; CSLS correction with K = {spec.csls_k}"
    return ""


def parse_estimator(name: str) -> EstimatorSpec:
    """``METHOD[+abs][+sX][+gN][+centre|+rank][+hub|+cslsK]`` -> spec (any order of options)."""
    base, *opts = [t.strip() for t in name.split("+")]
    if not base:
        raise OnnxAttrError(f"estimator {name!r} has no base name; write e.g. grad_input+abs+g16")
    kw: dict[str, Any] = {}
    correction, k = "", 0
    for t in opts:
        if t == "abs":
            kw["magnitude"] = True
        elif t in ("centre", "center"):
            kw["centre"] = True
        elif t == "rank":
            kw["rank"] = True
        elif t == "hub":
            correction = "hub"
        elif t.startswith("csls") and t[4:].isdigit() and int(t[4:]) > 0:
            correction, k = "csls", int(t[4:])
        elif t[:1] == "g" and t[1:].isdigit() and int(t[1:]) > 0:
            kw["grid"] = int(t[1:])
        elif t[:1] == "s" and _is_float(t[1:]) and float(t[1:]) > 0:
            kw["smooth"] = float(t[1:])
        else:
            raise OnnxAttrError(
                f"unknown option {t!r} in estimator {name!r}; map options: {MAP_OPTIONS}; "
                f"corrections: {CORRECTIONS} (e.g. grad_input+abs+g16+hub)"
            )
    return EstimatorSpec(base, MapComparison(**kw), correction, k)


def _is_float(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


# --------------------------------------------------------------------------- corrections
def remove_hub(gram: np.ndarray) -> np.ndarray:
    """Cosines of the signatures after subtracting their mean over models, from their Gram matrix
    (diagonal included) alone: double centring, then normalisation by the new diagonal. A model
    with nothing left after centring gets affinity 0 to the others (1 to itself)."""
    g = np.asarray(gram, dtype=np.float64)
    r = g.mean(axis=1)
    c = g - r[:, None] - r[None, :] + g.mean()
    d = np.sqrt(np.clip(np.diag(c), 0, None))
    scale = np.outer(d, d)
    tol = 1e-12 * max(1.0, float(np.abs(np.diag(g)).max(initial=0.0)))
    out = np.divide(c, scale, out=np.zeros_like(c), where=scale > tol)
    np.fill_diagonal(out, 1.0)
    return np.clip(out, -1.0, 1.0)


def csls(aff: np.ndarray, k: int) -> np.ndarray:
    """Cross-domain similarity local scaling: 2·A_ij − r_i − r_j with r_i the mean of the K largest
    off-diagonal affinities of row i (K capped at N − 1). Hubs, close to everything, are pulled
    down; ranks within a row change only through r_j."""
    a = np.asarray(aff, dtype=np.float64)
    n = len(a)
    k = max(1, min(k, n - 1))
    off = a.copy()
    np.fill_diagonal(off, -np.inf)
    r = np.sort(off, axis=1)[:, -k:].mean(axis=1)
    out = 2 * a - r[:, None] - r[None, :]
    np.fill_diagonal(out, 2 * np.diag(a) - 2 * r)
    return out


def correct(spec: EstimatorSpec, aff: np.ndarray) -> np.ndarray:
    if spec.correction == "hub":
        return remove_hub(aff)
    if spec.correction == "csls":
        return csls(aff, spec.csls_k)
    return np.asarray(aff, dtype=np.float64)
