"""Representation-similarity baselines on the stored encoder outputs (Np, D): linear CKA, RSA,
SVCCA and DEPARA's relation graph, each as a per-model signature whose pairwise combination is
the similarity (:class:`FeatureEstimator`). Registered by name in :mod:`.estimators`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ..errors import OnnxAttrError
from ..space_reader import SpaceReader
from .distances import normalise_rows


def gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T in float64; a @ a.T of the same array lets BLAS use the symmetric product (half
    the work)."""
    return (a @ (a.T if b is a else b.T)).astype(np.float64)


def _upper(m: np.ndarray) -> np.ndarray:
    return m[np.triu_indices(len(m), k=1)]


def _unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean()
    n = np.linalg.norm(v)
    return v / n if n > 0 else np.zeros_like(v)


def cka_signature(x: np.ndarray) -> np.ndarray:
    """vec(Kc) / ||Kc||_F with Kc the Gram matrix of centred features: <sig_x, sig_y> is linear
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    xc = x - x.mean(axis=0)
    k = xc @ xc.T
    n = np.linalg.norm(k)
    return (k / n).ravel() if n > 0 else np.zeros(k.size)


def rsa_signature(x: np.ndarray) -> np.ndarray:
    """Centred, unit-norm ranks of the RDM's upper triangle (RDM = 1 - Pearson correlation between
    images' features): the dot product of two signatures is Spearman's rho of the two RDMs."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(x), nan=0.0)  # constant feature rows: correlation 0
    return _unit(rankdata(_upper(1.0 - corr)))


def relation_signature(x: np.ndarray) -> np.ndarray:
    """DEPARA's edges: cosine similarity of two probe images' features; ranks as in RSA, so the
    dot product is Spearman's rho of the two graphs' edge weights."""
    xn = normalise_rows(x).astype(np.float64)
    return _unit(rankdata(_upper(xn @ xn.T)))


def svcca_signature(x: np.ndarray, keep: float = 0.99, max_dims: int = 50) -> np.ndarray:
    """Orthonormal basis (Np, k) of the top SVD directions of the centred features that explain
    ``keep`` of the variance, at most ``max_dims`` (CCA on directions comparable in number to Np
    finds spurious perfect correlations, hence the cap)."""
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    var = s**2
    if var.sum() <= 0:
        return np.zeros((len(x), 0))
    s_tol = s.max() * max(xc.shape) * np.finfo(np.float64).eps  # drop numerically-null directions
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), keep - 1e-12) + 1)
    k = min(k, max_dims, int((s > s_tol).sum()))
    return u[:, :k]


def svcca_pair(qa: np.ndarray, qb: np.ndarray) -> float:
    """Mean canonical correlation of two subspaces given by orthonormal bases: the singular
    values of qa^T qb are the canonical correlations (Björck & Golub)."""
    k = min(qa.shape[1], qb.shape[1])
    if k == 0:
        return 0.0
    return float(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False)[:k], 0, 1).mean())


class FeatureEstimator:
    """A baseline on encoder features; one signature per model (``part`` is unused)."""

    def __init__(self, name: str, fn: Callable[[np.ndarray], np.ndarray],
                 pair: Callable[[np.ndarray, np.ndarray], float] | None = None,
                 key_params: str = "", params: dict[str, Any] | None = None) -> None:
        self.name, self._fn, self._pair = name, fn, pair
        self.cache_key = f"features.{name}{key_params}"
        self.params = {"estimator": name, **(params or {})}

    def n_images(self, reader: SpaceReader, name: str) -> int:
        return reader.feature_shape(name)[0]

    def verify(self, reader: SpaceReader, name: str) -> None:
        reader.verify_features(name)

    def models_with_data(self, reader: SpaceReader) -> list[str]:
        return [m for m in reader.names() if reader.has_features(m)]

    def parts(self, reader: SpaceReader, names: Sequence[str], memory_bytes: int) -> list[None]:
        n = {self.n_images(reader, m) for m in names}
        if len(n) != 1:
            raise OnnxAttrError(f"features of {', '.join(names)} have different numbers of probe "
                                "images; all models must use the same probe set")
        return [None]

    def signature_bytes(self, reader: SpaceReader, name: str, part: None) -> int:
        n = self.n_images(reader, name)
        return n * n * 8

    def signature(self, features: np.ndarray) -> np.ndarray:
        return self._fn(np.asarray(features, dtype=np.float64))

    def stack(self, reader: SpaceReader, names: Sequence[str], part: None) -> list[np.ndarray]:
        return [self.signature(reader.features(m)) for m in names]

    def combine(self, a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
        if self._pair is None:
            sa = np.stack(a)
            return gram(sa, sa if b is a else np.stack(b))
        return np.array([[self._pair(x, y) for y in b] for x in a])
