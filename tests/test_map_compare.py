"""Map-comparison options, hub corrections and the combined estimator, against direct numpy."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

from onnxattr.analysis.estimators import compute_affinity, parse_combination, standardise
from onnxattr.analysis.map_compare import (
    MapComparison,
    csls,
    parse_estimator,
    pool_grid,
    remove_hub,
)
from onnxattr.errors import OnnxAttrError

from .space_factory import add_model, create_space


def direct_mean_cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean([x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(a, b)]))


@pytest.fixture()
def maps_space(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    n, s = 6, 12
    maps = {f"m{i}": rng.normal(size=(n, s, s)) + (i % 2) for i in range(4)}
    path = create_space(tmp_path / "s.h5", n, s)
    for name, m in maps.items():
        add_model(path, name, {"grad_input": m}, rng.normal(size=(n, 5)))
    return path, {k: v.astype(np.float32) for k, v in maps.items()}


def test_parse_names_round_trip() -> None:
    spec = parse_estimator("grad_input+hub+rank+g16+abs+s2")
    assert spec.name == "grad_input+abs+s2+g16+rank+hub"
    assert spec.inner == "grad_input+abs+s2+g16+rank"
    assert parse_estimator("elrp").comparison.is_reference
    assert parse_estimator("cka+csls3").name == "cka+csls3"
    with pytest.raises(OnnxAttrError, match="unknown option 'blur'.*map options"):
        parse_estimator("elrp+blur")
    with pytest.raises(OnnxAttrError, match="bad combination"):
        parse_combination("combine:elrp")


def test_pool_grid_is_area_average() -> None:
    x = np.arange(36, dtype=np.float32).reshape(1, 6, 6)
    np.testing.assert_allclose(pool_grid(x, 3)[0], x[0].reshape(3, 2, 3, 2).mean(axis=(1, 3)))
    # 3 pixels onto 2 cells: cell 0 = (p0 + p1/2) / 1.5, cell 1 = (p1/2 + p2) / 1.5
    y = np.array([[[1.0, 2.0, 4.0]] * 3], dtype=np.float32)
    np.testing.assert_allclose(pool_grid(y, 2)[0, 0], [(1 + 1) / 1.5, (1 + 4) / 1.5], rtol=1e-6)
    with pytest.raises(OnnxAttrError, match="finer than"):
        pool_grid(y, 4)


def test_variant_matches_direct_computation(maps_space) -> None:
    path, maps = maps_space
    aff, _ = compute_affinity(path, "grad_input+abs+g4+rank")
    assert aff.estimator == "grad_input+abs+g4+rank"

    def prep(m: np.ndarray) -> np.ndarray:
        return np.abs(m).reshape(len(m), 4, 3, 4, 3).mean(axis=(2, 4)).reshape(len(m), -1)

    for i, a in enumerate(aff.names):
        for j, b in enumerate(aff.names):
            rho = np.mean([spearmanr(x, y).statistic for x, y in zip(prep(maps[a]), prep(maps[b]))])
            assert aff.values[i, j] == pytest.approx(rho, abs=1e-5)
    centred, _ = compute_affinity(path, "grad_input+centre")
    ref = direct_mean_cos(
        maps["m0"] - maps["m0"].mean(axis=(1, 2), keepdims=True),
        maps["m1"] - maps["m1"].mean(axis=(1, 2), keepdims=True),
    )
    assert centred.values[0, 1] == pytest.approx(ref, abs=1e-5)
    # the reference comparison is untouched
    plain, _ = compute_affinity(path, "grad_input")
    assert plain.values[0, 1] == pytest.approx(direct_mean_cos(maps["m0"], maps["m1"]), abs=1e-5)


def test_smoothing_scale_follows_each_models_input_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n, s = 3, 32
    path = create_space(tmp_path / "s.h5", n, s)
    maps = {"small": rng.normal(size=(n, s, s)), "big": rng.normal(size=(n, s, s))}
    for name, m in maps.items():
        add_model(path, name, {"saliency": m})
    with h5py.File(path, "a") as f:  # 'small' saw the probe at 8 px, 'big' at 32 px
        f["models/small"].attrs["preprocessing"] = json.dumps({"input_size": [8, 8]})
        f["models/big"].attrs["preprocessing"] = json.dumps({"input_size": [32, 32]})
    aff, _ = compute_affinity(path, "saliency+s1.5")
    a = gaussian_filter(maps["big"], (0, 1.5, 1.5), mode="nearest")
    b = gaussian_filter(maps["small"], (0, 6.0, 6.0), mode="nearest")
    assert aff.values[aff.index("big"), aff.index("small")] == pytest.approx(
        direct_mean_cos(a, b), abs=1e-5
    )


def test_hub_removal_is_cosine_of_mean_subtracted_signatures(maps_space) -> None:
    path, maps = maps_space
    aff, _ = compute_affinity(path, "grad_input+hub")
    n_img = len(maps["m0"])
    sig = {
        k: np.concatenate([x.ravel() / np.linalg.norm(x) for x in v]) / np.sqrt(n_img)
        for k, v in maps.items()
    }
    mean = np.mean([sig[k] for k in aff.names], axis=0)
    for i, a in enumerate(aff.names):
        for j, b in enumerate(aff.names):
            x, y = sig[a] - mean, sig[b] - mean
            assert aff.values[i, j] == pytest.approx(
                x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), abs=1e-5
            )


def test_hub_removal_updates_with_n_pairs_and_finds_planted_pairs(tmp_path: Path) -> None:
    """Every model = strong shared map + weak pair-specific map: the plain cosine is dominated by
    the shared part; after hub removal each model's nearest neighbour is its partner."""
    rng = np.random.default_rng(4)
    n, s = 8, 10
    path = create_space(tmp_path / "s.h5", n, s)
    shared = rng.normal(size=(n, s, s)) * 3
    pair_maps = [rng.normal(size=(n, s, s)) for _ in range(3)]
    for p in range(3):
        for twin in "ab":
            add_model(
                path,
                f"p{p}{twin}",
                {"saliency": shared + pair_maps[p] + 0.5 * rng.normal(size=(n, s, s))},
            )
    compute_affinity(path, "saliency+hub")
    add_model(path, "extra", {"saliency": shared + rng.normal(size=(n, s, s))})
    aff, stats = compute_affinity(path, "saliency+hub")
    assert stats["computed_pairs"] == 7  # one new model: its 7 pairs (itself included)
    fresh, _ = compute_affinity(path, "saliency+hub", use_cache=False)
    # float32 products; centring cancels the large shared part, so compare at 1e-4
    np.testing.assert_allclose(aff.values, fresh.values, atol=1e-4)
    plain, _ = compute_affinity(path, "saliency")
    off = plain.values[~np.eye(len(plain.names), dtype=bool)]
    assert off.min() > 0.6  # everything looks alike before
    for p in range(3):
        i = aff.index(f"p{p}a")
        row = aff.values[i].copy()
        row[i] = -np.inf
        assert aff.names[int(np.argmax(row))] == f"p{p}b"


def test_csls_by_hand() -> None:
    a = np.array(
        [[1.0, 0.9, 0.8, 0.1], [0.9, 1.0, 0.7, 0.2], [0.8, 0.7, 1.0, 0.3], [0.1, 0.2, 0.3, 1.0]]
    )
    out = csls(a, 2)
    r = [0.85, 0.8, 0.75, 0.25]  # means of each row's two largest off-diagonal values
    assert out[0, 3] == pytest.approx(2 * 0.1 - r[0] - r[3])
    assert out[1, 2] == pytest.approx(2 * 0.7 - r[1] - r[2])
    np.testing.assert_allclose(out, out.T)


def test_remove_hub_degenerate_model_gets_zero() -> None:
    g = np.ones((3, 3))  # identical signatures: nothing left after centring
    np.testing.assert_allclose(remove_hub(g), np.eye(3))


def test_combined_estimator_and_recorded_params(maps_space) -> None:
    path, _ = maps_space
    combo, _ = compute_affinity(path, "combine:grad_input+abs=0.25,cka=0.75")
    a, _ = compute_affinity(path, "grad_input+abs")
    c, _ = compute_affinity(path, "cka")
    np.testing.assert_allclose(
        combo.values, 0.25 * standardise(a.values) + 0.75 * standardise(c.values)
    )
    off = standardise(c.values)[~np.eye(4, dtype=bool)]
    assert off.mean() == pytest.approx(0) and off.std() == pytest.approx(1)
    assert combo.estimator == "combine:grad_input+abs=0.25,cka=0.75"
    with h5py.File(path, "r") as f:
        params = json.loads(f["analysis/estimators/maps.grad_input+abs"].attrs["params"])
    assert params == {
        "method": "grad_input",
        "magnitude": True,
        "smooth_model_px": 0.0,
        "grid": 0,
        "centre": False,
        "rank": False,
    }


def test_map_options_rejected_on_feature_estimators(maps_space) -> None:
    path, _ = maps_space
    with pytest.raises(OnnxAttrError, match="map options apply to attribution methods"):
        compute_affinity(path, "cka+abs")
    hub, _ = compute_affinity(path, "cka+hub")
    assert hub.estimator == "cka+hub"


def test_comparison_params_are_validated() -> None:
    with pytest.raises(OnnxAttrError, match="sigma"):
        MapComparison(smooth=-1)
