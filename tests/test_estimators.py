"""Estimators against direct computations (written independently here), with invariances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import sqrtm
from scipy.stats import spearmanr

from onnxattr.analysis.estimators import (
    ESTIMATORS,
    FeatureEstimator,
    MapCosine,
    available_estimators,
    cka_signature,
    compute_affinity,
    describe,
    register_estimator,
)
from onnxattr.errors import OnnxAttrError

from .space_factory import add_model, create_space, random_space


def direct_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Feature-space form (Kornblith et al. 2019, eq. after (3)): ||Y'X||² / (||X'X|| ||Y'Y||)."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def direct_rsa(x: np.ndarray, y: np.ndarray) -> float:
    iu = np.triu_indices(len(x), 1)
    return spearmanr((1 - np.corrcoef(x))[iu], (1 - np.corrcoef(y))[iu]).statistic


def direct_cca(x: np.ndarray, y: np.ndarray, keep: float, max_dims: int) -> float:
    """SVD-reduce each side, then canonical correlations from the covariance formula
    Σxx^-1/2 Σxy Σyy^-1/2 (not via orthonormal bases, as the estimator does)."""
    def reduce(a: np.ndarray) -> np.ndarray:
        a = a - a.mean(0)
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        k = min(int(np.argmax(frac >= keep - 1e-12)) + 1, max_dims)
        return a @ vt[:k].T

    a, b = reduce(x), reduce(y)
    sxx, syy, sxy = a.T @ a, b.T @ b, a.T @ b
    m = np.linalg.inv(np.real(sqrtm(sxx))) @ sxy @ np.linalg.inv(np.real(sqrtm(syy)))
    rho = np.linalg.svd(m, compute_uv=False)[: min(a.shape[1], b.shape[1])]
    return float(np.mean(rho))


@pytest.fixture()
def feature_space(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    n, d = 40, 12
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    feats = {
        "x": x,
        "x_rot_scaled": 3.7 * x @ q + 5.0,      # orthogonal + isotropic scale + shift
        "x_aniso": x * np.linspace(0.1, 4, d),  # not an isotropic scaling
        "y": np.tanh(x[:, :6]) @ rng.normal(size=(6, 9)) + 0.5 * rng.normal(size=(n, 9)),
        "z": rng.normal(size=(n, 20)),
    }
    path = create_space(tmp_path / "s.h5", n, 4)
    for name, f in feats.items():
        add_model(path, name, {"saliency": rng.random((n, 4, 4))}, f)
    return path, {k: v.astype(np.float32).astype(np.float64) for k, v in feats.items()}


def test_cka_matches_direct_and_invariances(feature_space) -> None:
    path, feats = feature_space
    m, _ = compute_affinity(path, "cka", use_cache=False)
    for a in m.names:
        for b in m.names:
            assert m.values[m.index(a), m.index(b)] == pytest.approx(
                direct_cka(feats[a], feats[b]), abs=1e-9)
    i, j, k = m.index("x"), m.index("x_rot_scaled"), m.index("x_aniso")
    assert m.values[i, j] == pytest.approx(1.0, abs=1e-6)
    assert m.values[i, k] < 0.99  # CKA is not invariant to anisotropic scaling


def test_rsa_matches_direct(feature_space) -> None:
    path, feats = feature_space
    m, _ = compute_affinity(path, "rsa", use_cache=False)
    for a, b in [("x", "y"), ("x", "z"), ("y", "z"), ("x", "x_aniso")]:
        assert m.values[m.index(a), m.index(b)] == pytest.approx(
            direct_rsa(feats[a], feats[b]), abs=1e-9)
    # RDMs of Pearson correlations between images ignore a per-image shift and scale
    assert m.values[m.index("x"), m.index("x")] == pytest.approx(1.0)


def test_svcca_matches_direct_and_linear_invariance(feature_space) -> None:
    path, feats = feature_space
    m, _ = compute_affinity(path, "svcca", use_cache=False, svcca_keep=0.99, svcca_max_dims=5)
    for a, b in [("x", "y"), ("x", "z"), ("y", "z"), ("x", "x_aniso")]:
        assert m.values[m.index(a), m.index(b)] == pytest.approx(
            direct_cca(feats[a], feats[b], 0.99, 5), abs=1e-6)
    full, _ = compute_affinity(path, "svcca", use_cache=False, svcca_keep=1.0, svcca_max_dims=99)
    # without truncation CCA is invariant to any invertible linear map
    assert full.values[full.index("x"), full.index("x_aniso")] == pytest.approx(1.0, abs=1e-6)
    assert full.values[full.index("x"), full.index("x_rot_scaled")] == pytest.approx(1.0, abs=1e-6)


def test_map_cosine_and_depara_match_direct(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n, s = 9, 6
    path = create_space(tmp_path / "s.h5", n, s)
    maps = {k: rng.normal(size=(n, s, s)).astype(np.float32) for k in "abc"}
    maps["c"][2] = 0.0  # a zero map: its cosine counts as 0
    feats = {k: rng.normal(size=(n, 7)).astype(np.float32) for k in "abc"}
    for k in "abc":
        add_model(path, k, {"elrp": maps[k]}, feats[k])

    def cos_mean(a: np.ndarray, b: np.ndarray) -> float:
        tot = 0.0
        for u, v in zip(a.reshape(n, -1).astype(float), b.reshape(n, -1).astype(float),
                        strict=True):
            nu, nv = np.linalg.norm(u), np.linalg.norm(v)
            tot += 0.0 if nu == 0 or nv == 0 else u @ v / (nu * nv)
        return tot / n

    def relation(f: np.ndarray) -> np.ndarray:
        g = f / np.linalg.norm(f, axis=1, keepdims=True)
        return (g @ g.T)[np.triu_indices(n, 1)]

    m, _ = compute_affinity(path, "elrp")
    dep, _ = compute_affinity(path, "depara", lam=0.5)
    assert dep.estimator == "depara:elrp@0.5"
    for a in "abc":
        for b in "abc":
            c = cos_mean(maps[a], maps[b])
            assert m.values[m.index(a), m.index(b)] == pytest.approx(c, abs=1e-6)
            rho = spearmanr(relation(feats[a]), relation(feats[b])).statistic
            assert dep.values[dep.index(a), dep.index(b)] == pytest.approx(c + 0.5 * rho, abs=1e-6)
    assert m.values[m.index("c"), m.index("c")] == pytest.approx((n - 1) / n)


def test_registry(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    random_space(path, n_models=3, methods=("elrp", "saliency", "custom"))
    names = available_estimators(path)
    assert names == ["saliency", "elrp", "custom", "svcca", "cka", "rsa", "relation", "depara"]
    assert describe("cka").data == "features"
    assert describe("elrp").data == "maps"
    m, _ = compute_affinity(path, "depara:saliency")
    assert m.estimator == "depara:saliency"
    with pytest.raises(OnnxAttrError, match="unknown estimator 'nope'.*available: saliency"):
        compute_affinity(path, "nope")
    with pytest.raises(OnnxAttrError, match="DEPARA method 'lrp'"):
        compute_affinity(path, "depara:lrp")


@pytest.fixture()
def clean_registry():
    saved = dict(ESTIMATORS)
    yield
    ESTIMATORS.clear()
    ESTIMATORS.update(saved)


def test_register_estimator_through_api_and_cli(tmp_path: Path, clean_registry) -> None:
    """A features estimator with a parameter and a maps estimator, each one decorated function:
    listed, computed (checked against a direct computation), reachable from the CLI."""
    from typer.testing import CliRunner

    from onnxattr.analysis.distances import read_matrix_csv
    from onnxattr.cli import app

    @register_estimator("powcka", kind="features", description="linear CKA of |features|^power")
    def powcka(power: float = 2.0) -> FeatureEstimator:
        return FeatureEstimator("powcka", lambda x: cka_signature(np.abs(x) ** power),
                                key_params=f".p{power:g}")

    class AbsCosine(MapCosine):
        def __init__(self, method: str) -> None:
            super().__init__(method)
            self.name, self.cache_key = f"abscos:{method}", f"maps_abs.{method}"

        def stack(self, f, names, part):  # unit maps -> their absolute values, still unit norm
            return np.abs(super().stack(f, names, part))

    @register_estimator("abscos", kind="maps", description="cosine of |maps|")
    def abscos(method: str, comparison) -> MapCosine:
        return AbsCosine(method)

    path = tmp_path / "s.h5"
    data = random_space(path, n_models=3, methods=("saliency", "elrp"))
    assert available_estimators(path)[-2:] == ["powcka", "abscos"]
    assert describe("abscos:elrp").data == "maps"
    m, _ = compute_affinity(path, "powcka", power=3.0, lam=2.0)  # lam: depara's, not powcka's
    assert m.estimator == "powcka"
    for a in m.names:
        for b in m.names:
            fa, fb = (np.abs(data[k]["features"].astype(np.float64)) ** 3 for k in (a, b))
            assert m.values[m.index(a), m.index(b)] == pytest.approx(direct_cka(fa, fb), abs=1e-6)
    a, _ = compute_affinity(path, "abscos")  # default method: elrp before saliency
    assert a.estimator == "abscos:elrp"
    x, y = (np.abs(data[k]["maps"]["elrp"]).reshape(12, -1).astype(np.float64) for k in ("m0", "m2"))
    direct = np.mean(np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)))
    assert a.values[a.index("m0"), a.index("m2")] == pytest.approx(direct, abs=1e-6)
    np.testing.assert_allclose(a.values, compute_affinity(path, "elrp+abs")[0].values, atol=1e-6)
    with pytest.raises(OnnxAttrError, match="no estimator takes parameter 'powr'.*power \\(powcka\\)"):
        compute_affinity(path, "powcka", powr=3.0)

    runner = CliRunner()
    r = runner.invoke(app, ["estimators", "--space", str(path)])
    assert r.exit_code == 0, r.output
    assert "powcka" in r.output and "power=2.0" in r.output and "abscos:METHOD" in r.output
    r = runner.invoke(app, ["distance", "-s", str(path), "-m", "powcka", "-p", "power=3",
                            "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    cli = read_matrix_csv(tmp_path / "powcka_affinity.csv", "affinity")
    np.testing.assert_allclose(cli.values, m.values, atol=1e-6)
    r = runner.invoke(app, ["distance", "-s", str(path), "-m", "powcka", "-p", "power=x"])
    assert r.exit_code == 1 and "expected a float" in r.output
