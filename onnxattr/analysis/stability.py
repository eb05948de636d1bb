"""How sure a ranking is: the estimator recomputed on resamples of the probe set.

A ranking measured on Np probe images is itself an estimate. Two resampling schemes say how much
it depends on which images were drawn:

* **bootstrap** — B resamples of the Np images with replacement: percentile intervals of each
  affinity, of each source's rank, and (against an oracle) of P@K and Spearman. For attribution-map
  estimators (means of per-image cosines) this is the textbook bootstrap. Feature estimators
  (CKA, SVCCA, RSA, ...) are not means: a resample with repeated images looks more alike to them
  (on a random space, CKA's full-probe value fell outside its own 95% interval for every pair,
  SVCCA's for 93%). An estimator with any feature term is therefore resampled by **half-sampling**
  instead — B random halves without replacement, each matrix recentred on the full-probe one. A
  half-sample's mean varies around the full mean as much as a bootstrap mean does (σ²/Np), and
  the recentring removes what the smaller sample shifts;
* **disjoint halves** — the images split in two random halves, the estimator computed on each:
  the Spearman correlation of a target's two rankings is the agreement one would see between two
  independent probe draws of Np/2 images.

Attribution-map estimators are means over images of a per-image cosine, so every resample is a
weighted mean of the same per-image cosines: the maps are read once, per image chunk, and all
resamples are accumulated together (the cost of one uncached distance computation). Feature
estimators (CKA, RSA, SVCCA, relation) are recomputed on each resample's images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from ..errors import OnnxAttrError
from ..space_reader import SpaceReader, read_space
from .distances import DEFAULT_MEMORY_BYTES, LabelledMatrix
from .estimators import (
    COMBINE_PREFIX,
    FeatureEstimator,
    MapCosine,
    combine_matrices,
    common_models,
    compute_affinity,
    parse_combination,
    resolve_terms,
)
from .evaluation import Oracle, evaluate
from .map_compare import correct, parse_estimator
from .sketch import MapSketch

_BOOTSTRAP_RULE = "`bootstrap` needs at least 2 probe resamples (0: no intervals), not {}"


def check_bootstrap(bootstrap: int) -> int:
    """``bootstrap`` as the number of probe resamples for intervals: 0 (none) or at least 2. The
    one rule of the API, the report and the CLI (a single resample has no spread)."""
    if bootstrap != 0 and not bootstrap >= 2:
        raise OnnxAttrError(_BOOTSTRAP_RULE.format(bootstrap))
    return bootstrap


def bootstrap_indices(n_images: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` resamples of the probe images with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_images, n_images) for _ in range(n)]


def half_samples(n_images: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` random halves of the probe images, without replacement (seeded)."""
    if n_images < 4:
        raise OnnxAttrError(f"half-sampling {n_images} probe images needs at least 4")
    rng = np.random.default_rng(seed)
    return [np.sort(rng.permutation(n_images)[: n_images // 2]) for _ in range(n)]


def has_feature_terms(space: str | Path, name: str, **params: Any) -> bool:
    """Whether ``name`` (or a part of its combination) is recomputed from stored features, so
    that repeated images in a resample would bias it (see the module docstring). ``params``:
    estimator parameters, as for :func:`~onnxattr.analysis.estimators.compute_affinity`."""
    if name.startswith(COMBINE_PREFIX):
        return any(has_feature_terms(space, p, **params) for p, _ in parse_combination(name))
    terms, _ = resolve_terms(space, parse_estimator(name), **params)
    return not all(isinstance(est, (MapCosine, MapSketch)) for est, _ in terms)


def disjoint_halves(
    n_images: int, n_splits: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` random splits of the probe images into two disjoint halves."""
    if n_images < 4:
        raise OnnxAttrError(f"splitting {n_images} probe images in halves needs at least 4")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_splits):
        p = rng.permutation(n_images)
        out.append((np.sort(p[: n_images // 2]), np.sort(p[n_images // 2 :])))
    return out


def _map_resamples(
    reader: SpaceReader, est: MapCosine | MapSketch, names: Sequence[str], weights: np.ndarray,
    memory_bytes: int,
) -> np.ndarray:
    """(R, N, N): sum_k weights[r, k] · cos_k(i, j) over the images k, streamed in chunks
    (MapSketch: one part, all images)."""
    n = len(names)
    n_img = weights.shape[1]
    out = np.zeros((len(weights), n * n))
    for part in est.parts(reader, names, memory_bytes):
        sig = est.stack(reader, names, part)  # rows: unit maps (sketches) / sqrt(Np), image-major
        if not isinstance(part, slice):
            part = slice(0, n_img)
        k = part.stop - part.start
        sig = sig.reshape(n, k, -1).astype(np.float64)
        per_image = np.einsum("ikp,jkp->kij", sig, sig).reshape(k, n * n) * n_img
        out += weights[:, part] @ per_image
    return out.reshape(len(weights), n, n)


def _feature_resamples(
    reader: SpaceReader, est: FeatureEstimator, names: Sequence[str],
    indices: Sequence[np.ndarray],
) -> np.ndarray:
    feats = [reader.features(m).astype(np.float64) for m in names]
    out = []
    for idx in indices:
        sigs = [est.signature(x[idx]) for x in feats]
        out.append(est.combine(sigs, sigs))
    return np.array(out)


def resampled_affinities(
    space: str | Path,
    name: str,
    indices: Sequence[np.ndarray],
    models: Sequence[str] | None = None,
    *,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    **params: Any,
) -> tuple[list[str], np.ndarray]:
    """Estimator ``name`` recomputed on each probe resample (arrays of image indices, repeats
    allowed): (names, values (R, N, N)). Nothing is cached (each resample is a new probe set).
    ``params``: estimator parameters, as for :func:`~onnxattr.analysis.estimators.compute_affinity`
    (the intervals of a matrix computed with them must be computed with them too)."""
    if name.startswith(COMBINE_PREFIX):
        parts = parse_combination(name)
        comps = [
            resampled_affinities(space, p, indices, models, memory_bytes=memory_bytes, **params)
            for p, _ in parts
        ]
        names = [n for n in comps[0][0] if all(n in c[0] for c in comps[1:])]
        vals = []
        for r in range(len(indices)):
            mats = [LabelledMatrix(c[0], c[1][r]) for c in comps]
            vals.append(combine_matrices(mats, [w for _, w in parts]).values)
        return names, np.array(vals)
    spec = parse_estimator(name)
    terms, _ = resolve_terms(space, spec, **params)
    names = list(models) if models is not None else common_models(space, terms)
    if len(names) < 2:
        raise OnnxAttrError(f"{name!r} needs at least two models with its data")
    total = None
    with read_space(space) as reader:
        n_img = terms[0][0].n_images(reader, names[0])
        for est, w in terms:
            if isinstance(est, (MapCosine, MapSketch)):
                weights = np.array([np.bincount(i, minlength=n_img) / len(i) for i in indices])
                vals = _map_resamples(reader, est, names, weights, memory_bytes)
            else:
                vals = _feature_resamples(reader, est, names, indices)
            total = w * vals if total is None else total + w * vals
    assert total is not None
    if spec.correction:
        total = np.array([correct(spec, v) for v in total])
    return names, total


# --------------------------------------------------------------------------- summaries
def _rank_of(scores: np.ndarray) -> np.ndarray:
    """Rank (1 = most similar) of every column per row, the row's own model excluded (rank 0)."""
    s = scores.astype(np.float64).copy()
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(len(s))[:, None]
    ranks[rows, order] = np.arange(1, len(s) + 1)[None, :]
    np.fill_diagonal(ranks, 0)
    return ranks


def _row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.full(len(a), math.nan)
    for i in range(len(a)):
        keep = np.arange(len(a)) != i
        x, y = a[i, keep], b[i, keep]
        if len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = spearmanr(x, y).statistic
    return out


@dataclass
class Stability:
    """Sensitivity of an estimator's rankings to the probe draw."""

    estimator: str
    names: list[str]
    affinity: np.ndarray  # full-probe matrix
    low: np.ndarray  # 2.5th percentile of each affinity over bootstrap resamples
    high: np.ndarray  # 97.5th percentile
    rank_low: np.ndarray  # 2.5th / 97.5th percentile of each source's rank for each target
    rank_high: np.ndarray
    top1_kept: np.ndarray  # per target: fraction of resamples keeping the full-probe top-1
    halves_rho: np.ndarray  # per target: mean Spearman of the two disjoint halves' rankings
    n_boot: int
    n_images: int
    boot: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    scheme: str = "bootstrap"  # bootstrap | halves (recentred half-samples: feature estimators)

    @property
    def resampling(self) -> str:
        """How the intervals were drawn, for a person: '30 bootstrap draws of 64 images'."""
        if self.scheme == "halves":
            return (f"{self.n_boot} recentred half-samples of {self.n_images} images "
                    "(feature estimators are biased by repeated images)")
        return f"{self.n_boot} bootstrap draws of {self.n_images} images"

    @property
    def agreement(self) -> float:
        v = self.halves_rho[np.isfinite(self.halves_rho)]
        return float(v.mean()) if v.size else math.nan

    def note(self) -> str | None:
        """One line when this estimator cannot tell the models apart on this probe set."""
        spread = self.affinity[~np.eye(len(self.names), dtype=bool)]
        noise = float(np.median((self.high - self.low)[~np.eye(len(self.names), dtype=bool)]))
        gap = float(np.ptp(spread))
        if gap <= noise or self.agreement < 0.5:
            return (
                f"{self.estimator}: too close to tell models apart — affinities span "
                f"{spread.min():.3g}..{spread.max():.3g} while a probe resample moves one by "
                f"±{noise / 2:.2g}; two disjoint probe halves agree at ρ = "
                f"{self.agreement:.2f}"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "n_boot": self.n_boot,
            "n_images": self.n_images,
            "resampling": self.scheme,
            "halves_spearman": self.agreement,
            "top1_kept": dict(zip(self.names, self.top1_kept.tolist(), strict=True)),
            "note": self.note(),
        }


def ranking_stability(
    space: str | Path,
    name: str,
    models: Sequence[str] | None = None,
    *,
    n_boot: int = 30,
    n_splits: int = 5,
    seed: int = 0,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    **params: Any,
) -> Stability:
    """Probe-resampling intervals (bootstrap, or recentred half-samples for an estimator with
    a feature term) and disjoint-halves agreement of ``name``'s rankings. ``params``: estimator
    parameters, as for :func:`~onnxattr.analysis.estimators.compute_affinity`."""
    if n_boot < 2:
        raise OnnxAttrError(_BOOTSTRAP_RULE.format(n_boot))
    full, _ = compute_affinity(space, name, models, memory_bytes=memory_bytes, **params)
    names = full.names
    with read_space(space) as r:
        n_img = (
            r.feature_shape(names[0])[0]
            if r.has_features(names[0])
            else r.map_shape(names[0], r.methods(names[0])[0])[0]
        )
    scheme = "halves" if has_feature_terms(space, name, **params) else "bootstrap"
    boots = (half_samples if scheme == "halves" else bootstrap_indices)(n_img, n_boot, seed)
    halves = disjoint_halves(n_img, n_splits, seed + 1)
    flat = [i for pair in halves for i in pair]
    _, vals = resampled_affinities(
        space, name, boots + flat, names, memory_bytes=memory_bytes, **params
    )
    boot, half = vals[:n_boot], vals[n_boot:]
    if scheme == "halves":
        boot = boot - boot.mean(axis=0) + full.values
    ranks = np.array([_rank_of(b) for b in boot])
    top1 = np.argmax(np.where(np.eye(len(names), dtype=bool), -np.inf, full.values), axis=1)
    kept = np.array([np.mean(ranks[:, i, top1[i]] == 1) for i in range(len(names))])
    rho = (
        np.nanmean([_row_spearman(half[2 * s], half[2 * s + 1]) for s in range(n_splits)], axis=0)
        if n_splits
        else np.full(len(names), math.nan)
    )
    return Stability(
        full.estimator,
        names,
        full.values,
        np.percentile(boot, 2.5, axis=0),
        np.percentile(boot, 97.5, axis=0),
        np.percentile(ranks, 2.5, axis=0),
        np.percentile(ranks, 97.5, axis=0),
        kept,
        rho,
        n_boot,
        n_img,
        boot,
        scheme,
    )


@dataclass
class EvaluationCI:
    """Percentile intervals of P@K and Spearman over probe resamples."""

    estimator: str
    ks: list[int]
    precision: dict[int, tuple[float, float]]
    spearman: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "precision_ci": {str(k): list(v) for k, v in self.precision.items()},
            "spearman_ci": list(self.spearman),
        }


def evaluation_ci(
    stab: Stability,
    oracle: Oracle,
    top: int = 5,
    ks: Sequence[int] = (1, 3, 5),
    mapping: dict[str, str] | None = None,
    families: dict[str, str] | None = None,
) -> EvaluationCI:
    """P@K and Spearman of every bootstrap matrix against ``oracle``: 95% percentile intervals."""
    evals = [
        evaluate(LabelledMatrix(stab.names, b, "affinity", stab.estimator), oracle, top, mapping,
                 families)
        for b in stab.boot
    ]
    kmax = len(evals[0].k)
    prec = {
        k: tuple(np.percentile([e.precision[k - 1] for e in evals], [2.5, 97.5]).tolist())
        for k in ks
        if k <= kmax
    }
    rho = [e.spearman for e in evals if not math.isnan(e.spearman)]
    sp = tuple(np.percentile(rho, [2.5, 97.5]).tolist()) if rho else (math.nan, math.nan)
    return EvaluationCI(stab.estimator, [k for k in ks if k <= kmax], prec, sp)
