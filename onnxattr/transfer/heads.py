"""The one head recipe of measured transfer, fitted on frozen features in closed form.

* Split: seeded permutation into 60 % train / 20 % validation / 20 % test (per class for
  image-level classes, so every class is in the training part).
* Image-level targets: the encoder output average-pooled to 2×2 (vectors as they are), flattened
  (channel groups averaged down to at most 4096 values), standardised on the training part.
* Dense targets (R×R): the spatial encoder output resized (bilinear) to ⌈R/2⌉², every position's
  3×3 neighbourhood (zero-padded) as its input vector, standardised; the decoder is a linear 3×3
  convolution to 4·C values per position, rearranged by a pixel shuffle to R×R — a sub-pixel
  convolution decoder (Shi et al., 2016). With more than 128 channels the neighbourhood is 1×1 and
  channel groups are averaged down to at most 1152 inputs.
* Fit: ridge regression onto the targets (one-hot for classes), λ = α·tr(G)/D with α chosen on
  the validation part from :data:`ALPHAS`; the test score of that fit is the transfer score.
* Scores (higher = better): accuracy (image classes), R² = 1 − SSE/SST pooled over outputs
  (regression, image-level or dense), mean IoU over the classes present (dense classes).

Closed form makes the score a deterministic function of features and labels: no SGD noise in the
oracle, one eigendecomposition per source and image set, milliseconds per target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OnnxAttrError

RECIPE_VERSION = 1
FRACTIONS = (0.6, 0.2, 0.2)
ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
MAX_IMAGE_DIMS = 4096
MAX_DENSE_DIMS = 1152
METRICS = {"image_cls": "accuracy", "image_reg": "R²", "dense_reg": "R²", "dense_cls": "mean IoU"}


def recipe() -> dict:
    """The head recipe's settings, stored with every score."""
    return {
        "version": RECIPE_VERSION,
        "split": list(FRACTIONS),
        "alphas": list(ALPHAS),
        "image": "avg-pool 2x2, standardise, ridge",
        "dense": "resize to ceil(R/2), 3x3 neighbourhood, standardise, ridge, pixel shuffle 2",
    }


def split(n: int, seed: int, classes: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Seeded train/validation/test indices (stratified by class when `classes` is given)."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(n)]
        if classes is None
        else [np.flatnonzero(classes == c) for c in np.unique(classes)]
    )
    parts: list[list[int]] = [[], [], []]
    for g in groups:
        g = rng.permutation(g)
        n_te = max(1, round(FRACTIONS[2] * len(g)))
        n_va = min(round(FRACTIONS[1] * len(g)), len(g) - n_te - 1)
        n_tr = len(g) - n_te - n_va
        parts[0] += g[:n_tr].tolist()
        parts[1] += g[n_tr : n_tr + n_va].tolist()
        parts[2] += g[n_tr + n_va :].tolist()
    tr, va, te = (np.sort(np.array(p, dtype=int)) for p in parts)
    if len(va) == 0:  # tiny classes: validate on the training part rather than not at all
        va = tr
    return tr, va, te


def group_mean(x: torch.Tensor, max_dim: int) -> torch.Tensor:
    """(N, D) -> (N, <= max_dim) by averaging consecutive groups (zero-padded)."""
    if x.shape[1] <= max_dim:
        return x
    groups = -(-x.shape[1] // max_dim)
    x = F.pad(x, (0, groups * max_dim - x.shape[1]))
    return x.view(x.shape[0], max_dim, groups).mean(2)


def image_design(features: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, ...) encoder outputs -> (N, D) pooled inputs of the linear head."""
    f = torch.as_tensor(features, dtype=torch.float32)
    if f.dim() == 4:
        f = F.adaptive_avg_pool2d(f, (min(2, f.shape[2]), min(2, f.shape[3])))
    return group_mean(f.flatten(1), MAX_IMAGE_DIMS).numpy()


def feature_maps(features: np.ndarray) -> torch.Tensor:
    """Encoder outputs as (N, C, H, W) float32: vectors as 1×1 maps, (N, H, W) as one channel."""
    f = torch.as_tensor(features, dtype=torch.float32)
    if f.dim() == 2:
        return f[:, :, None, None]
    if f.dim() == 3:
        return f[:, None]
    if f.dim() != 4:
        raise OnnxAttrError(f"encoder output of rank {f.dim()} has no per-pixel features; "
                            "dense targets need a feature map or vector")
    return f


def dense_design(features: np.ndarray, side: int) -> np.ndarray:
    """Encoder outputs -> (N, m·m, D) per-position inputs of the sub-pixel decoder, m = ⌈side/2⌉."""
    f = feature_maps(features)
    m = -(-side // 2)
    f = F.interpolate(f, size=(m, m), mode="bilinear", align_corners=False)
    n, c = f.shape[:2]
    if 9 * c <= MAX_DENSE_DIMS:
        cols = F.unfold(f, 3, padding=1)  # (N, 9C, m·m)
    else:
        cols = group_mean(f.permute(0, 2, 3, 1).reshape(-1, c), MAX_DENSE_DIMS)
        cols = cols.view(n, m * m, -1).transpose(1, 2)
    return cols.transpose(1, 2).contiguous().numpy()


def _unshuffle(y: np.ndarray, m: int) -> np.ndarray:
    """(N, C, R, R) -> (N·m·m, 4C): each decoder position's 2×2 block (edge-padded to 2m)."""
    r = y.shape[-1]
    t = torch.as_tensor(y, dtype=torch.float32)
    if 2 * m != r:
        t = F.pad(t, (0, 2 * m - r, 0, 2 * m - r), mode="replicate")
    t = F.pixel_unshuffle(t, 2)  # (N, 4C, m, m)
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]).numpy()


def _shuffle(pred: np.ndarray, n: int, m: int, r: int) -> np.ndarray:
    t = torch.as_tensor(pred).view(n, m, m, -1).permute(0, 3, 1, 2)
    return F.pixel_shuffle(t, 2)[..., :r, :r].numpy()


class _Ridge:
    """Standardised ridge regression for every α of the grid from one eigendecomposition of the
    training design; targets sharing the design (same features and training part) reuse it."""

    def __init__(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        self.mu, sd = x.mean(0), x.std(0)
        self.sd = np.where(sd > 1e-8 * max(float(sd.max(initial=0)), 1e-30), sd, np.inf)
        self.xs = (x - self.mu) / self.sd
        g = self.xs.T @ self.xs
        self.evals, self.evecs = np.linalg.eigh(g)
        self.evals = np.clip(self.evals, 0, None)
        self.scale = max(float(np.trace(g)) / max(g.shape[0], 1), 1e-12)

    def fit(self, y: np.ndarray) -> _Fit:
        ymu = y.mean(0)
        return _Fit(self, ymu, self.evecs.T @ (self.xs.T @ (y - ymu)))


@dataclass
class _Fit:
    base: _Ridge
    ymu: np.ndarray
    xty: np.ndarray

    def predict(self, x: np.ndarray, alpha: float) -> np.ndarray:
        b = self.base
        w = b.evecs @ (self.xty / (b.evals + alpha * b.scale)[:, None])
        return ((x.astype(np.float64) - b.mu) / b.sd) @ w + self.ymu


def _r2(pred: np.ndarray, y: np.ndarray) -> float:
    sst = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - float(((pred - y) ** 2).sum()) / sst if sst > 0 else math.nan


def _miou(pred: np.ndarray, y: np.ndarray, k: int) -> float:
    ious = []
    for c in range(k):
        p, t = pred == c, y == c
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious))


@dataclass
class SceneStats:
    """Per test scene, the sums the score pools, so the score of the test scenes reweighted (a
    bootstrap draw, repeats as weights) follows without refitting: the oracle's test-scene
    bootstrap. Columns: accuracy [correct]; R² [SSE, Σy², pixels, Σy per output]; mean IoU
    [intersection per class, union per class]. `test`: the scenes' indices in the target's
    images, so that one draw over the images reweights every target's test part alike."""

    metric: str
    sums: np.ndarray  # (n_test, columns)
    test: np.ndarray  # (n_test,)

    def score(self, weights: np.ndarray | None = None) -> float:
        """The score with each test scene counted `weights` times (None: once, the score)."""
        w = np.ones(len(self.sums)) if weights is None else np.asarray(weights, np.float64)
        t = w @ self.sums
        if self.metric == "accuracy":
            return float(t[0] / w.sum()) if w.sum() > 0 else math.nan
        if self.metric == "R²":
            sst = t[1] - float((t[3:] ** 2).sum()) / t[2] if t[2] > 0 else 0.0
            return 1.0 - float(t[0]) / sst if sst > 0 else math.nan
        k = len(t) // 2
        present = t[k:] > 0
        return float(np.mean(t[:k][present] / t[k:][present])) if present.any() else math.nan


def _r2_stats(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R² sums per scene of (scene, pixels, outputs) predictions."""
    return np.concatenate([
        ((pred - y) ** 2).sum((1, 2))[:, None], (y**2).sum((1, 2))[:, None],
        np.full((len(y), 1), y.shape[1], np.float64), y.sum(1),
    ], axis=1)


def _miou_stats(pred: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    p, t = pred.reshape(len(pred), -1), y.reshape(len(y), -1)
    inter = [((p == c) & (t == c)).sum(1) for c in range(k)]
    union = [((p == c) | (t == c)).sum(1) for c in range(k)]
    return np.stack(inter + union, axis=1).astype(np.float64)


@dataclass
class HeadScore:
    score: float
    val_score: float
    alpha: float
    metric: str
    n_train: int
    n_val: int
    n_test: int
    scenes: SceneStats | None = None  # with `fit_score(scenes=True)`


def fit_score(
    features: np.ndarray,
    y: np.ndarray,
    kind: str,
    n_outputs: int,
    seed: int = 0,
    designs: dict | None = None,
    scenes: bool = False,
) -> HeadScore:
    """Fit the recipe's head on frozen `features` for labels `y`; score it on the test part.

    `designs`: a dict kept by the caller for one `features` array, so that targets on the same
    images share the design and its eigendecomposition (same result, computed once). `scenes`:
    also the test part's per-scene sums (`SceneStats`).
    """
    n = len(y)
    tr, va, te = split(n, seed, y if kind == "image_cls" else None)
    designs = {} if designs is None else designs

    def ridge(
        mode: str, make_x: Callable[[], np.ndarray], rows: Callable[[np.ndarray], np.ndarray]
    ):
        if mode not in designs:
            designs[mode] = make_x()
        key = (mode, tr.tobytes())
        if key not in designs:
            designs[key] = _Ridge(rows(designs[mode][tr]))
        return designs[mode], designs[key]

    if kind.startswith("image"):
        x, base = ridge("image", lambda: image_design(features), lambda a: a)
        if kind == "image_cls":
            t = np.eye(n_outputs)[y]
            model = base.fit(t[tr])

            def score(idx: np.ndarray, a: float) -> float:
                return float((model.predict(x[idx], a).argmax(1) == y[idx]).mean())

            def stats(idx: np.ndarray, a: float) -> np.ndarray:
                return (model.predict(x[idx], a).argmax(1) == y[idx]).astype(np.float64)[:, None]
        else:
            model = base.fit(y[tr].astype(np.float64))

            def score(idx: np.ndarray, a: float) -> float:
                return _r2(model.predict(x[idx], a), y[idx])

            def stats(idx: np.ndarray, a: float) -> np.ndarray:
                pred, truth = model.predict(x[idx], a), y[idx].astype(np.float64)
                return _r2_stats(pred.reshape(len(idx), 1, -1), truth.reshape(len(idx), 1, -1))
    else:
        r = y.shape[-1]
        m = -(-r // 2)
        x, base = ridge(  # x: (N, m·m, D)
            f"dense{r}", lambda: dense_design(features, r), lambda a: a.reshape(-1, a.shape[2])
        )
        dense_y = (
            np.eye(n_outputs, dtype=np.float32)[y].transpose(0, 3, 1, 2)
            if kind == "dense_cls"
            else y
        )
        model = base.fit(_unshuffle(dense_y[tr], m))

        def score(idx: np.ndarray, a: float) -> float:
            pred = _shuffle(model.predict(x[idx].reshape(-1, x.shape[2]), a), len(idx), m, r)
            if kind == "dense_cls":
                return _miou(pred.argmax(1), y[idx], n_outputs)
            return _r2(
                pred.transpose(0, 2, 3, 1).reshape(-1, y.shape[1]),
                y[idx].transpose(0, 2, 3, 1).reshape(-1, y.shape[1]),
            )

        def stats(idx: np.ndarray, a: float) -> np.ndarray:
            pred = _shuffle(model.predict(x[idx].reshape(-1, x.shape[2]), a), len(idx), m, r)
            if kind == "dense_cls":
                return _miou_stats(pred.argmax(1), y[idx], n_outputs)
            pixels = pred.reshape(len(idx), pred.shape[1], -1).transpose(0, 2, 1)
            truth = y[idx].reshape(len(idx), y.shape[1], -1).transpose(0, 2, 1)
            return _r2_stats(pixels, truth.astype(np.float64))

    vals = [score(va, a) for a in ALPHAS]
    finite = [v if math.isfinite(v) else -math.inf for v in vals]
    best = int(np.argmax(finite))
    return HeadScore(
        score(te, ALPHAS[best]), vals[best], ALPHAS[best], METRICS[kind], len(tr), len(va), len(te),
        SceneStats(METRICS[kind], stats(te, ALPHAS[best]), te) if scenes else None,
    )
