"""Directed (asymmetric) estimators: A[t, s] says how well *source* s serves *target* t.

Transfer is asymmetric, and every symmetric similarity misses that. The matrices here follow the
analysis layer's convention (:func:`onnxattr.analysis.evaluation.evaluate`,
:func:`onnxattr.analysis.distances.ranking`): **row = target, column = source**.

* :func:`predictivity_matrix` — ``predict``: the out-of-fold fraction of the target's centred
  feature variance that a ridge regression on the source's features predicts, per probe image
  (R² pooled over target dimensions, so each dimension counts by its variance). Source features
  are centred, not standardised: standardising sparse ReLU dimensions, active in a few training
  images, made held-out predictions explode on the benchmark's space (mean out-of-fold R² −0.15
  against 0.20 centred; a check on the features alone, no oracle involved). K folds over the
  probe images; in each, the ridge penalty is chosen by generalised cross-validation (GCV) on the
  training folds alone, then the held-out fold is predicted. Computed in the dual (kernel) form, so sources and
  targets of any width cost O(Np³) per pair.
* :func:`effective_rank` — ``rankme`` (Garrido et al., ICML 2023): a label-free source quality,
  the effective rank of the source's centred features divided by its maximum min(Np, D), the
  same for every target (A[t, s] = q(s)); useful inside ``combine:``.
* :func:`coverage_matrix` — ``coverage``: a source quality read from the space itself rather than
  from one model's statistics: the mean of ``predict`` over every other model as target, i.e. how
  much of the other encoders' features the source's features contain. A source that holds what
  many encoders compute is a general one; the same for every target.

Neither is cached in the space (the pairwise cache assumes symmetry) and neither takes ``+hub`` or
``+cslsK`` (both corrections assume a symmetric Gram matrix). Probe-bootstrap intervals
(:mod:`.stability`) work; ``predict`` counts a repeated probe image once, so a bootstrap
resample is a subsample (about 63 % of the images).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxAttrError
from ..space_reader import SpaceReader, read_space
from .distances import LabelledMatrix, select_models

#: Ridge penalties tried by GCV, as multiples of the mean eigenvalue of the training kernel.
ALPHAS = tuple(10.0 ** np.arange(-3.0, 3.5, 0.5))


def fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number of each of ``n`` probe images: a seeded permutation cut into ``folds`` nearly
    equal parts (probe sets may be stored in class order)."""
    if not 2 <= folds <= n:
        raise OnnxAttrError(f"predict needs 2 to {n} folds (one per probe image at most); "
                            f"got {folds}")
    ids = np.empty(n, dtype=int)
    ids[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return ids




class _FoldKernel:
    """One source on one fold: eigenvectors of its training kernel and the test-train kernel."""

    def __init__(self, x: np.ndarray, train: np.ndarray, test: np.ndarray) -> None:
        z = x - x[train].mean(0)
        e, self.u = np.linalg.eigh(z[train] @ z[train].T)
        self.e = np.clip(e, 0.0, None)
        self.k_test = z[test] @ z[train].T
        self.lams = np.array(ALPHAS) * max(self.e.mean(), 1e-12)


def _fold_sse(src: _FoldKernel, lc: np.ndarray, train: np.ndarray, test: np.ndarray
              ) -> tuple[float, float]:
    """(held-out SSE, held-out SST) of the ridge prediction of a target whose linear kernel,
    centred by its training mean, is ``lc``; the penalty minimises GCV on the training rows."""
    n = len(train)
    m = src.u.T @ lc[np.ix_(train, train)] @ src.u  # target kernel in the source's eigenbasis
    q = np.clip(np.diag(m), 0.0, None)  # squared norms of the target's training projections
    shrink = src.lams[:, None] / (src.e[None, :] + src.lams[:, None])  # (L, n) residual factors
    gcv = n * (shrink**2 @ q) / np.maximum(n - (1 - shrink).sum(1), 1e-12) ** 2
    lam = src.lams[int(np.argmin(gcv))]
    b = src.k_test @ (src.u / (src.e + lam))  # prediction = b @ (U^T Y_train)
    cross = src.u.T @ lc[np.ix_(train, test)]  # U^T Y_train Y_test^T
    sst = float(np.trace(lc[np.ix_(test, test)]))
    sse = sst - 2.0 * float(np.einsum("ij,ji->", b, cross)) + float(np.einsum("ij,jk,ik->", b, m, b))
    return max(sse, 0.0), sst


def predictivity_matrix(features: Sequence[np.ndarray], folds: int = 5, seed: int = 0
                        ) -> np.ndarray:
    """A[t, s] = out-of-fold R² of target t's features predicted from source s's features by
    ridge regression (see the module docstring); the diagonal is 1. Every model's features are
    (Np, D_model) on the same probe images."""
    n = {len(x) for x in features}
    if len(n) != 1:
        raise OnnxAttrError("features have different numbers of probe images; all models must "
                            "use the same probe set")
    # a row repeated in every model (a probe image drawn twice by a bootstrap) counts once: a
    # repeat in the training folds would make GCV choose to memorise, one across folds would leak
    rows = np.hstack([np.asarray(x).reshape(len(x), -1) for x in features])
    keep = np.sort(np.unique(rows, axis=0, return_index=True)[1])
    xs = [np.asarray(x, dtype=np.float64)[keep] for x in features]
    ids = fold_ids(len(keep), folds, seed)
    splits = [(np.flatnonzero(ids != k), np.flatnonzero(ids == k)) for k in range(folds)]
    kernels = [[_FoldKernel(x, tr, te) for tr, te in splits] for x in xs]
    out = np.eye(len(xs))
    for t, y in enumerate(xs):
        gram = y @ y.T
        fold_lc = []
        for tr, _ in splits:  # centring by the training mean, in kernel form: C L C^T
            c = np.eye(len(y))
            c[:, tr] -= 1.0 / len(tr)
            fold_lc.append(c @ gram @ c.T)
        for s in range(len(xs)):
            if s == t:
                continue
            sse = sst = 0.0
            for (tr, te), src, lc in zip(splits, kernels[s], fold_lc, strict=True):
                a, b = _fold_sse(src, lc, tr, te)
                sse, sst = sse + a, sst + b
            out[t, s] = 1.0 - sse / sst if sst > 0 else 0.0
    return out


def coverage_matrix(features: Sequence[np.ndarray], folds: int = 5) -> np.ndarray:
    """A[t, s] = mean over models u ≠ s of :func:`predictivity_matrix`'s A[u, s], the same for
    every target t (0 with fewer than two models)."""
    p = predictivity_matrix(features, folds)
    n = len(p)
    q = (p.sum(0) - np.diag(p)) / (n - 1) if n > 1 else np.zeros(n)
    return np.tile(q, (n, 1))


def effective_rank(x: np.ndarray) -> float:
    """RankMe: exp(entropy) of the normalised singular values of the centred (Np, D) features,
    divided by min(Np, D) so it lies in (0, 1]; 0 for constant features."""
    x = np.asarray(x, dtype=np.float64)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()) / min(x.shape))


class DirectedEstimator:
    """A matrix estimator on encoder features whose value for (target, source) is not that of
    (source, target); ``fn`` maps every model's features to the (target, source) matrix."""

    def __init__(self, name: str, fn: Callable[[list[np.ndarray]], np.ndarray],
                 params: dict[str, Any] | None = None) -> None:
        self.name, self._fn = name, fn
        self.params = {"estimator": name, **(params or {})}

    def n_images(self, reader: SpaceReader, name: str) -> int:
        return reader.feature_shape(name)[0]

    def models_with_data(self, reader: SpaceReader) -> list[str]:
        return [m for m in reader.names() if reader.has_features(m)]

    def matrix(self, reader: SpaceReader, names: Sequence[str]) -> np.ndarray:
        """The (target, source) matrix of ``names``' features, each checked against its checksum."""
        return self._fn([reader.features(m) for m in names])

    # what probe resampling (:mod:`.stability`) calls on a feature estimator: the signature is
    # the (resampled) features themselves, and the whole matrix comes from one call
    def signature(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64)

    def combine(self, a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
        if b is not a:
            raise OnnxAttrError(f"{self.name!r} is computed over all models at once")
        return self._fn(list(a))


def directed_matrix(space: str | Path, est: DirectedEstimator,
                    models: Sequence[str] | None = None) -> tuple[LabelledMatrix, dict[str, int]]:
    """The estimator's (target, source) matrix over ``models`` (default: every model with its
    data; the others go to ``matrix.excluded``), computed in full: nothing is cached."""
    with read_space(Path(space)) as reader:
        names, excluded = select_models(reader, est, models)
        values = est.matrix(reader, names)
    return (LabelledMatrix(names, values, "affinity", est.name, excluded),
            {"computed_pairs": len(names) ** 2, "cached_models": 0})
