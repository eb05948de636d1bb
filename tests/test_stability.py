"""Probe resampling: resamples against direct recomputation, intervals and the 'too close' note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxattr.analysis.estimators import compute_affinity
from onnxattr.analysis.evaluation import Oracle
from onnxattr.analysis.stability import (
    bootstrap_indices,
    disjoint_halves,
    evaluation_ci,
    ranking_stability,
    resampled_affinities,
)

from .space_factory import add_model, create_space, random_space


@pytest.mark.parametrize(
    "name",
    ["grad_input", "saliency+abs+g4+hub", "cka", "depara", "combine:grad_input+rank=1,rsa=2"],
)
def test_identity_resample_is_the_estimator(tmp_path: Path, name: str) -> None:
    random_space(tmp_path / "s.h5", n_models=4, n_probe=10)
    full, _ = compute_affinity(tmp_path / "s.h5", name, use_cache=False)
    names, vals = resampled_affinities(tmp_path / "s.h5", name, [np.arange(10)])
    assert names == full.names
    np.testing.assert_allclose(vals[0], full.values, atol=1e-5)


def test_half_and_bootstrap_resamples_match_direct(tmp_path: Path) -> None:
    data = random_space(tmp_path / "s.h5", n_models=3, n_probe=10)
    half, boot = np.array([1, 4, 6, 7, 9]), np.array([0, 0, 3, 3, 3, 5, 8, 8, 2, 2])
    _, vals = resampled_affinities(tmp_path / "s.h5", "grad_input", [half, boot])

    def mean_cos(idx: np.ndarray, a: str, b: str) -> float:
        x = data[a]["maps"]["grad_input"][idx].reshape(len(idx), -1).astype(np.float64)
        y = data[b]["maps"]["grad_input"][idx].reshape(len(idx), -1).astype(np.float64)
        return float(
            np.mean(np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1))
        )

    for r, idx in enumerate([half, boot]):
        assert vals[r, 0, 2] == pytest.approx(mean_cos(idx, "m0", "m2"), abs=1e-5)
    # feature estimators are recomputed on the resample's images
    _, cka = resampled_affinities(tmp_path / "s.h5", "cka", [half])
    x, y = data["m0"]["features"][half], data["m1"]["features"][half]
    x, y = x - x.mean(0), y - y.mean(0)
    direct = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert cka[0, 0, 1] == pytest.approx(direct, abs=1e-5)


def test_halves_are_disjoint_and_bootstrap_seeded() -> None:
    for a, b in disjoint_halves(11, 3):
        assert not set(a) & set(b) and len(a) == 5 and len(b) == 6
    assert all(
        (x == y).all() for x, y in zip(bootstrap_indices(9, 3, 1), bootstrap_indices(9, 3, 1))
    )


def _pairs_space(path: Path, signal: float, n: int = 24, s: int = 8) -> Path:
    """Three pairs of models; within a pair the maps share a component of weight ``signal``."""
    rng = np.random.default_rng(5)
    create_space(path, n, s)
    for p in range(3):
        common = rng.normal(size=(n, s, s))
        for t in "ab":
            add_model(path, f"p{p}{t}", {"saliency": signal * common + rng.normal(size=(n, s, s))})
    return path


def test_clear_structure_is_stable_and_noise_gets_a_note(tmp_path: Path) -> None:
    clear = ranking_stability(_pairs_space(tmp_path / "c.h5", 2.0), "saliency", n_boot=20)
    assert clear.agreement > 0.5 and clear.note() is None
    assert (clear.top1_kept > 0.9).all()
    i, j = clear.names.index("p0a"), clear.names.index("p0b")
    assert clear.rank_low[i, j] == clear.rank_high[i, j] == 1
    assert clear.low[i, j] <= clear.affinity[i, j] <= clear.high[i, j]
    noise = ranking_stability(_pairs_space(tmp_path / "n.h5", 0.0), "saliency", n_boot=20)
    assert noise.note() is not None and "too close to tell models apart" in noise.note()
    oracle = Oracle(
        ["p0a", "p1a"],
        clear.names,
        np.array(
            [
                [1 if n == "p0b" else 0.5 for n in clear.names],
                [1 if n == "p1b" else 0.2 for n in clear.names],
            ]
        ),
    )
    ci = evaluation_ci(clear, oracle, top=1, ks=(1, 3))
    assert ci.precision[1] == (1.0, 1.0)
    assert ci.spearman[0] <= ci.spearman[1]


def _feature_world(rng: np.random.Generator, n: int, mix: np.ndarray) -> dict[str, np.ndarray]:
    """Three models' features of n images drawn from one latent distribution."""
    z = rng.normal(size=(n, mix.shape[1]))
    return {
        "a": z @ mix[0] + 0.5 * rng.normal(size=(n, mix.shape[2])),
        "b": np.tanh(z @ mix[1]) + 0.8 * rng.normal(size=(n, mix.shape[2])),
        "c": z[:, :3] @ mix[2, :3] + rng.normal(size=(n, mix.shape[2])),
    }


def _feature_space(path: Path, feats: dict[str, np.ndarray]) -> Path:
    n = len(feats["a"])
    create_space(path, n, 4)
    for name, x in feats.items():
        add_model(path, name, {"saliency": np.ones((n, 4, 4))}, x)
    return path


@pytest.mark.parametrize("name", ["cka", "svcca"])
def test_feature_intervals_cover_what_another_probe_draw_gives(tmp_path: Path, name: str) -> None:
    """Intervals must say how far another probe set of the same size moves the estimate. With
    the plain bootstrap, repeated images made SVCCA's interval miss the estimator's mean over
    independent probe draws for every pair (coverage 0.0; CKA 0.82)."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(3, 6, 16))
    n = 60
    draws = [
        compute_affinity(_feature_space(tmp_path / f"t{r}.h5", _feature_world(rng, n, mix)),
                         name, use_cache=False)[0].values
        for r in range(30)
    ]
    expected = np.mean(draws, axis=0)
    off = ~np.eye(3, dtype=bool)
    covered = []
    for r in range(15):
        space = _feature_space(tmp_path / f"s{r}.h5", _feature_world(rng, n, mix))
        s = ranking_stability(space, name, n_boot=40, n_splits=0)
        assert s.scheme == "halves"
        covered.append(((expected >= s.low) & (expected <= s.high))[off].mean())
    assert np.mean(covered) >= 0.85


def test_map_estimators_keep_the_bootstrap(tmp_path: Path) -> None:
    random_space(tmp_path / "s.h5", n_models=3, n_probe=10)
    assert ranking_stability(tmp_path / "s.h5", "grad_input", n_boot=5).scheme == "bootstrap"
    s = ranking_stability(tmp_path / "s.h5", "combine:grad_input=1,cka=1", n_boot=5)
    assert s.scheme == "halves" and "half-samples" in s.resampling


def test_intervals_take_every_estimator_parameter(tmp_path: Path) -> None:
    """Intervals of a matrix computed with a non-default parameter are centred on that matrix,
    not on the default one (``--param`` reaches the resamples)."""
    space = tmp_path / "s.h5"
    random_space(space, n_models=4, n_probe=12)
    default, _ = compute_affinity(space, "svcca", use_cache=False)
    two, _ = compute_affinity(space, "svcca", use_cache=False, svcca_max_dims=2)
    assert not np.allclose(default.values, two.values, atol=1e-3)
    _, ident = resampled_affinities(space, "svcca", [np.arange(12)], svcca_max_dims=2)
    np.testing.assert_allclose(ident[0], two.values, atol=1e-5)
    s = ranking_stability(space, "svcca", n_boot=6, n_splits=0, svcca_max_dims=2)
    np.testing.assert_allclose(s.affinity, two.values, atol=1e-6)
    np.testing.assert_allclose(s.boot.mean(axis=0), two.values, atol=1e-6)  # recentred on it
    assert np.all(s.low <= two.values + 1e-9) and np.all(two.values <= s.high + 1e-9)
