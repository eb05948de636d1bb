"""Label-based transferability estimates: a source scored from its frozen features and a few
target labels, with no head fitted (the peers a user with labels would pick instead of the
label-free estimators, and a cheaper stand-in for :func:`~.measure.measure_transfer`).

Samples. Image-level targets: one sample per image, the encoder output global-average-pooled
(vectors as they are; channel groups averaged down to at most :data:`MAX_DIMS` values). Dense
targets (R×R label maps): one sample per labelled pixel, its feature vector read from the encoder
output resized (bilinear) to R×R; at most ``max_samples`` pixels in all, the same number from
every image, at seeded random positions (a dense map has R² strongly correlated pixels: thousands
of them say as much as all of them, and every estimate below is at least linear in the samples).

Estimates (all higher = better; values compare sources for one target, not targets):

* ``logme`` — LogME (You et al., ICML 2021): the log evidence per sample of Bayesian linear
  regression from the features to each target column, α and β maximised by the paper's fixed
  point, averaged over columns (one-hot columns for classes; regression targets natively).
* ``leep`` — LEEP (Nguyen et al., ICML 2020) in the N-LEEP form (Li et al., CVPR 2021): the
  encoders here have no source classifier, so the "source label distribution" is the posterior
  of a Gaussian mixture fitted to the features after PCA to 80 % of their variance (full
  covariances; one component per target class, at most one per 10 samples — the code of Shao et
  al.'s comparison uses five per class, which costs about ten times as much per source here).
* ``nce`` — NCE (Tran et al., ICCV 2019): the negative conditional entropy −H(Y | Z) of the
  target labels given hard source labels Z, here the mixture's most probable component.
* ``hscore`` — H-score (Bao et al., ICIP 2019), tr(cov(f)⁻¹ cov(E[f | y])), by default with the
  shrinkage of Ibrahim et al. (2022): cov(f) is replaced by its Ledoit–Wolf estimate
  (1 − a)·cov(f) + a·tr(cov(f))/D·I and the between-class term is scaled by (1 − a); without it
  (``shrinkage=False``) the pseudo-inverse of the raw covariance, as Bao et al.'s code does, which
  is unstable when samples are few against the feature dimension.
* ``sfda`` — SFDA (Shao et al., ECCV 2022): regularised Fisher discriminant analysis (within-class
  scatter shrunk towards a scaled identity by exp(−5·λmax)), its class posteriors softened by a
  second softmax, each sample mixed towards the mean of the other classes by one minus its own
  class's softened probability (ConfMix), a second FDA on the mixed samples; the score is the
  mean posterior of the true class. With every discriminant direction kept (as the authors'
  code keeps them) the FDA classifier is linear discriminant analysis with the shrunk scatter,
  which is how it is computed here; the authors approximate λmax by three power iterations,
  here it is exact.

Regression targets (image-level or dense) and the class-based estimates (all but ``logme``):
the targets are quantised into ``bins`` classes first — quantile bins of a single channel, or
k-means clusters of the (standardised) channel vectors — so every estimate applies to every
target kind. The quantisation is part of the estimate's definition; LogME needs none.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import logsumexp, softmax

from ..errors import OnnxAttrError
from ..registry import Registry
from .data import TargetTask
from .heads import feature_maps, group_mean
from .measure import merge_labelled_csv
from .sources import SpaceSource, check_batch_size, load_sources

MAX_DIMS = 1024
MAX_SAMPLES = 4000
BINS = 8
GMM_RATIO = 1

EstimateFn = Callable[..., float]


@dataclass(frozen=True)
class Estimate:
    """A registered estimate: ``fn(x, y)`` with x (M, D) float samples and y (M,) int class ids
    or, when ``regression``, (M, K) float targets as well."""

    name: str
    fn: EstimateFn
    regression: bool
    description: str


#: Every label-based estimate by name, in registration order.
ESTIMATES: Registry[Estimate] = Registry("estimate")


def register_estimate(
    name: str, *, regression: bool, description: str
) -> Callable[[EstimateFn], EstimateFn]:
    """Decorator: register ``fn`` as estimate ``name``; ``regression``: it takes float targets
    as they are (otherwise they are quantised into classes first)."""

    def decorate(fn: EstimateFn) -> EstimateFn:
        ESTIMATES.add(name, Estimate(name, fn, regression, description))
        return fn

    return decorate


def get_estimate(name: str) -> Estimate:
    return ESTIMATES.get(name)


# ------------------------------------------------------------------------------------ samples
def samples(
    features: np.ndarray,
    y: np.ndarray,
    dense: bool,
    max_samples: int = MAX_SAMPLES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(x (M, D) float64, labels) from encoder outputs and a target's labels (see the module
    docstring). Dense labels: (N, R, R) class ids -> (M,); (N, C, R, R) floats -> (M, C)."""
    if len(features) != len(y):
        raise OnnxAttrError(f"{len(features)} feature rows but {len(y)} labels")
    if not dense:
        f = features.mean((2, 3)) if features.ndim == 4 else features.reshape(len(features), -1)
        return group_mean(torch.as_tensor(f, dtype=torch.float64), MAX_DIMS).numpy(), y
    r = y.shape[-1]
    f = feature_maps(features)
    n = len(f)
    per = max(1, min(r * r, max_samples // n))
    rng = np.random.default_rng(seed)
    pos = np.stack([rng.choice(r * r, per, replace=False) for _ in range(n)])  # (N, per)
    xs = []
    for k in range(0, n, 64):  # resize a batch at a time: (64, C, R, R) stays small
        up = F.interpolate(f[k : k + 64], size=(r, r), mode="bilinear", align_corners=False)
        up = up.flatten(2).numpy()  # (b, C, R·R)
        xs.append(np.take_along_axis(up, pos[k : k + 64, None, :], 2).transpose(0, 2, 1))
    x = np.concatenate(xs).reshape(n * per, -1).astype(np.float64)
    flat = y.reshape(n, -1) if y.ndim == 3 else y.reshape(n, y.shape[1], -1)
    if y.ndim == 3:
        lab = np.take_along_axis(flat, pos, 1).reshape(-1)
    else:
        lab = np.take_along_axis(flat, pos[:, None, :], 2).transpose(0, 2, 1)
        lab = lab.reshape(n * per, -1)
    return group_mean(torch.from_numpy(x), MAX_DIMS).numpy(), lab


def quantise(y: np.ndarray, bins: int = BINS, seed: int = 0) -> np.ndarray:
    """(M,) or (M, K) float targets -> (M,) class ids: quantile bins of one channel, k-means
    clusters of the standardised channel vectors for several."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if y.shape[1] == 1:
        edges = np.unique(np.quantile(y[:, 0], np.arange(1, bins) / bins))
        ids = np.searchsorted(
            edges, y[:, 0], side="left"
        )  # ties (e.g. many zeros) to the lower bin
    else:
        sd = y.std(0)
        ids = kmeans((y - y.mean(0)) / np.where(sd > 0, sd, 1.0), bins, seed)
    ids = np.unique(ids, return_inverse=True)[1]
    if ids.max() < 1:
        raise OnnxAttrError(
            "the target values are constant over the labelled samples; nothing to estimate"
        )
    return ids


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """Cluster ids of k-means (k-means++ start, Lloyd iterations), seeded."""
    centres = _kmeanspp(x, k, np.random.default_rng(seed))
    ids = None
    for _ in range(iters):
        new = ((x[:, None, :] - centres[None]) ** 2).sum(2).argmin(1)
        if ids is not None and (new == ids).all():
            break
        ids = new
        for c in range(len(centres)):
            if (ids == c).any():
                centres[c] = x[ids == c].mean(0)
    return ids


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    d = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, min(k, len(x))):
        if d.sum() <= 0:
            break
        centres.append(x[rng.choice(len(x), p=d / d.sum())])
        d = np.minimum(d, ((x - centres[-1]) ** 2).sum(1))
    return np.array(centres, dtype=np.float64)


def _classes(y: np.ndarray) -> tuple[np.ndarray, int]:
    ids = np.unique(np.asarray(y).reshape(-1), return_inverse=True)[1]
    if ids.max(initial=0) < 1:
        raise OnnxAttrError("the labelled samples hold a single class; estimates need two")
    return ids, int(ids.max()) + 1


# ------------------------------------------------------------------------------------ LogME
def logme_evidence(
    sigma: np.ndarray, z: np.ndarray, yy: float, m: int, tol: float = 1e-7, iters: int = 100
) -> float:
    """Maximised log evidence / m of one target column, from the eigenvalues ``sigma`` of FᵀF,
    z = Vᵀ Fᵀ y in that eigenbasis and yy = yᵀy (You et al.'s fixed point for α, β)."""
    d = len(sigma)
    alpha, beta = 1.0, 1.0
    for _ in range(iters):
        w = beta * z / (alpha + beta * sigma)  # posterior mean in the eigenbasis
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        mm = float(w @ w)
        res = max(yy - 2 * float(w @ z) + float((sigma * w * w).sum()), 1e-12 * max(yy, 1e-300))
        new_a, new_b = gamma / max(mm, 1e-300), (m - gamma) / res
        done = abs(new_a - alpha) / alpha < tol and abs(new_b - beta) / beta < tol
        alpha, beta = new_a, new_b
        if done:
            break
    w = beta * z / (alpha + beta * sigma)
    res = max(yy - 2 * float(w @ z) + float((sigma * w * w).sum()), 0.0)
    ev = (
        m / 2 * math.log(beta)
        + d / 2 * math.log(alpha)
        - m / 2 * math.log(2 * math.pi)
        - beta / 2 * res
        - alpha / 2 * float(w @ w)
        - 0.5 * float(np.log(alpha + beta * sigma).sum())
    )
    return ev / m


@register_estimate("logme", regression=True, description="LogME, You et al. 2021")
def logme(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over target columns (one-hot for class ids) of the maximised log evidence / sample."""
    f = np.asarray(x, dtype=np.float64)
    if np.issubdtype(np.asarray(y).dtype, np.integer) and np.ndim(y) == 1:
        ids, k = _classes(y)
        t = np.eye(k)[ids]
    else:
        t = np.asarray(y, dtype=np.float64).reshape(len(f), -1)
    sigma, v = np.linalg.eigh(f.T @ f)
    sigma = np.clip(sigma, 0.0, None)
    zs = v.T @ (f.T @ t)  # (D, K)
    return float(
        np.mean(
            [
                logme_evidence(sigma, zs[:, j], float(t[:, j] @ t[:, j]), len(f))
                for j in range(t.shape[1])
            ]
        )
    )


# ------------------------------------------------------------------------------------ H-score
def ledoit_wolf(x: np.ndarray) -> float:
    """Ledoit–Wolf optimal shrinkage a of the covariance of the centred samples x (M, D)."""
    m, d = x.shape
    s = x.T @ x / m
    mu = np.trace(s) / d
    delta = float(((s - mu * np.eye(d)) ** 2).sum()) / d
    beta = (float(((x * x).sum(1) ** 2).sum()) / m - float((s * s).sum())) / (m * d)
    return 0.0 if delta <= 0 else min(beta, delta) / delta


@register_estimate("hscore", regression=False, description="H-score, Bao et al. 2019")
def hscore(x: np.ndarray, y: np.ndarray, shrinkage: bool = True) -> float:
    """tr(cov(f)⁻¹ cov(E[f|y])), Ledoit–Wolf shrunk as in Ibrahim et al. 2022 by default."""
    ids, k = _classes(y)
    f = np.asarray(x, dtype=np.float64)
    f = f - f.mean(0)
    means = np.zeros((k, f.shape[1]))
    np.add.at(means, ids, f)
    means /= np.bincount(ids, minlength=k)[:, None]
    g = means[ids]
    cov_f, cov_g = f.T @ f / len(f), g.T @ g / len(f)
    if not shrinkage:
        return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))
    a = ledoit_wolf(f)
    d = cov_f.shape[0]
    shrunk = (1 - a) * cov_f + a * np.trace(cov_f) / d * np.eye(d)
    return float(np.trace(np.linalg.solve(shrunk, (1 - a) * cov_g)))


# ------------------------------------------------------------------------------------ N-LEEP, NCE
def pca80(x: np.ndarray, energy: float = 0.8) -> np.ndarray:
    """The centred samples projected on the fewest principal axes holding ``energy`` of the
    variance."""
    f = x - x.mean(0)
    evals, evecs = np.linalg.eigh(f.T @ f)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    total = evals.clip(0).sum()
    if total <= 0:
        raise OnnxAttrError("the features are constant over the labelled samples")
    keep = int(np.searchsorted(np.cumsum(evals.clip(0)) / total, energy) + 1)
    return f @ evecs[:, :keep]


def gmm_posterior(x: np.ndarray, k: int, seed: int = 0, iters: int = 100) -> np.ndarray:
    """(M, k) component posteriors of a full-covariance Gaussian mixture fitted by EM (k-means
    start, covariances regularised by 1e-6 of the mean variance, stopped when the mean
    log-likelihood gains less than 1e-3, as scikit-learn's default)."""
    m, d = x.shape
    ids = kmeans(x, k, seed, iters=20)
    resp = np.eye(int(ids.max()) + 1)[ids]
    reg = 1e-6 * float(x.var(0).mean()) + 1e-12
    prev = -np.inf
    for _ in range(iters):
        nk = resp.sum(0) + 1e-10
        mu = resp.T @ x / nk[:, None]
        logp = np.empty((m, len(nk)))
        for c in range(len(nk)):
            dx = x - mu[c]
            cov = (resp[:, c, None] * dx).T @ dx / nk[c] + reg * np.eye(d)
            chol = np.linalg.cholesky(cov)
            sol = dx @ np.linalg.inv(chol).T  # whitened: (L⁻¹ dx)ᵀ per row
            logp[:, c] = (
                math.log(nk[c] / m)
                - 0.5 * (sol * sol).sum(1)
                - np.log(np.diag(chol)).sum()
                - d / 2 * math.log(2 * math.pi)
            )
        norm = logsumexp(logp, axis=1)
        resp = np.exp(logp - norm[:, None])
        ll = float(norm.mean())
        if ll - prev < 1e-3:
            break
        prev = ll
    return resp


def source_posterior(x: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """N-LEEP's pseudo source labels: mixture posteriors on the PCA-80 % features,
    ``GMM_RATIO × classes`` components, at most one per 10 samples (at least two)."""
    k = max(2, min(GMM_RATIO * n_classes, len(x) // 10))
    return gmm_posterior(pca80(np.asarray(x, dtype=np.float64)), k, seed)


def leep_from(theta: np.ndarray, ids: np.ndarray) -> float:
    """LEEP of class ids given source label distributions theta (M, Z)."""
    k = int(ids.max()) + 1
    joint = np.zeros((k, theta.shape[1]))
    np.add.at(joint, ids, theta)
    joint /= len(ids)
    cond = joint / np.maximum(joint.sum(0, keepdims=True), 1e-300)  # P(y | z)
    return float(np.log(np.maximum((theta * cond[ids]).sum(1), 1e-300)).mean())


def nce_from(z: np.ndarray, ids: np.ndarray) -> float:
    """−H(Y | Z) of class ids given hard source labels z."""
    joint = np.zeros((int(ids.max()) + 1, int(z.max()) + 1))
    np.add.at(joint, (ids, z), 1.0)
    joint /= len(ids)
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / np.broadcast_to(pz, joint.shape)[nz])).sum())


@register_estimate(
    "leep", regression=False, description="N-LEEP, Nguyen et al. 2020 / Li et al. 2021"
)
def leep(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    ids, k = _classes(y)
    return leep_from(source_posterior(x, k, seed), ids)


@register_estimate("nce", regression=False, description="NCE, Tran et al. 2019 (mixture labels)")
def nce(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    ids, k = _classes(y)
    return nce_from(source_posterior(x, k, seed).argmax(1), ids)


# ------------------------------------------------------------------------------------ SFDA
def _lda_posterior(
    x: np.ndarray, ids: np.ndarray, k: int, shrinkage: float | None
) -> tuple[np.ndarray, float]:
    """Class posteriors of LDA with the within-class scatter shrunk as SFDA does; the shrinkage
    (exp(−5·λmax(S_w)) when None)."""
    priors = np.bincount(ids, minlength=k) / len(ids)
    means = np.zeros((k, x.shape[1]))
    np.add.at(means, ids, x)
    means /= np.bincount(ids, minlength=k)[:, None]
    dx = x - means[ids]
    sw = dx.T @ dx / len(x)  # Σ_c prior_c · cov_c: each sample weighs prior_c / n_c = 1 / n
    if shrinkage is None:
        shrinkage = max(math.exp(-5 * float(np.linalg.eigvalsh(sw)[-1])), 1e-10)
    d = sw.shape[0]
    shrunk = (1 - shrinkage) * sw + shrinkage * np.trace(sw) / d * np.eye(d)
    coef = np.linalg.solve(shrunk, means.T).T  # (k, D)
    logits = x @ coef.T - 0.5 * (means * coef).sum(1) + np.log(priors)
    return softmax(logits, axis=1), shrinkage


@register_estimate("sfda", regression=False, description="SFDA, Shao et al. 2022")
def sfda(x: np.ndarray, y: np.ndarray) -> float:
    ids, k = _classes(y)
    f = np.asarray(x, dtype=np.float64)
    prob, lam = _lda_posterior(f, ids, k, None)
    soft = softmax(prob, axis=1)  # the authors' second softmax
    means = np.zeros((k, f.shape[1]))
    np.add.at(means, ids, f)
    means /= np.bincount(ids, minlength=k)[:, None]
    others = (means.sum(0) - means) / (k - 1)  # mean of the other classes' means
    p = soft[np.arange(len(ids)), ids][:, None]
    mixed = p * f + (1 - p) * others[ids]
    prob2, _ = _lda_posterior(mixed, ids, k, lam)
    return float(prob2[np.arange(len(ids)), ids].mean())


# ------------------------------------------------------------------------------------ entry point
def score(
    name: str,
    features: np.ndarray,
    y: np.ndarray,
    kind: str,
    *,
    bins: int = BINS,
    max_samples: int = MAX_SAMPLES,
    seed: int = 0,
) -> float:
    """Estimate ``name`` for one source's ``features`` on a target's labels ``y`` of ``kind``
    (a :class:`~.data.TargetTask` kind)."""
    est = get_estimate(name)
    x, lab = samples(features, y, kind.startswith("dense"), max_samples, seed)
    if kind.endswith("reg") and not est.regression:
        lab = quantise(lab, bins, seed)
    return est.fn(x, lab)


# ------------------------------------------------------------------------------------ sources
@dataclass
class EstimateResult:
    """``scores[(estimate, source)]`` for one target, higher = better."""

    target: TargetTask
    estimates: list[str]
    sources: list[str]
    scores: dict[tuple[str, str], float]
    settings: dict[str, Any]
    written: list[Path] = field(default_factory=list)  # files the API call wrote

    def ranked(self, estimate: str) -> list[tuple[str, float]]:
        return sorted(((s, self.scores[(estimate, s)]) for s in self.sources), key=lambda p: -p[1])


def estimate_transfer(
    space: str | Path,
    target: TargetTask,
    estimates: Sequence[str],
    sources: Sequence[str] | Sequence[SpaceSource] | None = None,
    *,
    bins: int = BINS,
    max_samples: int = MAX_SAMPLES,
    seed: int = 0,
    batch_size: int = 64,
    log: Callable[[str], None] | None = None,
) -> EstimateResult:
    """Every estimate in ``estimates`` for every source (default: all models of the space) on
    ``target``'s labelled images: one encoder run per source, no head fitted."""
    say = log or (lambda *_: None)
    check_batch_size(batch_size)
    ests = [get_estimate(e) for e in dict.fromkeys(estimates)]  # unknown names fail first
    if not ests:
        raise OnnxAttrError("no estimate given; one or more of " + ", ".join(ESTIMATES))
    if bins < 2:
        raise OnnxAttrError(f"bins must be at least 2, got {bins}")
    if max_samples < 10:
        raise OnnxAttrError(f"max_samples must be at least 10, got {max_samples}")
    srcs = (
        list(sources)
        if sources and isinstance(sources[0], SpaceSource)
        else load_sources(space, list(sources) if sources else None)
    )
    scores: dict[tuple[str, str], float] = {}
    seconds: dict[str, float] = {}
    for i, src in enumerate(srcs, 1):
        t0 = time.perf_counter()
        features = src.runner.run(target.images, batch_size)
        for est in ests:
            scores[(est.name, src.name)] = score(
                est.name,
                features,
                target.y,
                target.kind,
                bins=bins,
                max_samples=max_samples,
                seed=seed,
            )
        seconds[src.name] = time.perf_counter() - t0
        say(f"[{i}/{len(srcs)}] {src.name} ({seconds[src.name]:.1f} s)")
    settings = {
        "space": str(space),
        "bins": bins,
        "max_samples": max_samples,
        "seed": seed,
        "seconds": seconds,
        "sources": {s.name: {"uid": s.uid, "onnx_path": str(s.onnx_path)} for s in srcs},
    }
    return EstimateResult(target, [e.name for e in ests], [s.name for s in srcs], scores, settings)


def write_estimates(
    result: EstimateResult, csv_path: str | Path, json_path: str | Path | None = None
) -> list[Path]:
    """A labelled CSV, one row ``TARGET:ESTIMATE`` per estimate and one column per source
    (rows of other targets or estimates already in the file are kept), and the settings as
    JSON beside it."""
    csv_path = Path(csv_path)
    new: dict[str, dict[str, float]] = {}
    for (e, s), v in result.scores.items():
        new.setdefault(f"{result.target.name}:{e}", {})[s] = v
    merge_labelled_csv(csv_path, new, corner="target:estimate")
    json_path = Path(json_path) if json_path else csv_path.with_suffix(".json")
    json_path.write_text(
        json.dumps(
            {
                "target": result.target.describe(),
                "estimates": result.estimates,
                "scores": {
                    e: {s: result.scores[(e, s)] for s in result.sources} for e in result.estimates
                },
                "settings": result.settings,
            },
            indent=1,
        )
    )
    return [csv_path, json_path]
