"""Distance engine: cache, incremental updates, chunking, I/O."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from onnxattr.analysis import distances
from onnxattr.analysis.distances import (
    DISTANCE_CAP,
    LabelledMatrix,
    affinity_to_distance,
    distance_to_affinity,
    ranking,
    read_matrix_csv,
    write_matrix,
)
from onnxattr.analysis.estimators import compute_affinity
from onnxattr.errors import OnnxAttrError

from .space_factory import add_model, create_space, random_space, remove_model


def direct_affinity(data: dict, method: str) -> np.ndarray:
    """Paper's definition with a plain loop: mean over images of the cosine of flattened maps."""
    names = sorted(data)
    out = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            ma, mb = data[a]["maps"][method], data[b]["maps"][method]
            cos = [float(np.dot(x.ravel(), y.ravel()) / (np.linalg.norm(x) * np.linalg.norm(y)))
                   for x, y in zip(ma.astype(float), mb.astype(float), strict=True)]
            out[i, j] = np.mean(cos)
    return out


def test_affinity_and_distance_match_definition(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    data = random_space(path, n_models=4, n_probe=7)
    m, stats = compute_affinity(path, "saliency")
    assert m.names == sorted(data)
    np.testing.assert_allclose(m.values, direct_affinity(data, "saliency"), atol=1e-6)
    np.testing.assert_allclose(m.distance().values, 1.0 / m.values)  # Np / sum_k cos
    assert stats == {"computed_pairs": 10, "cached_models": 0}  # 4·5/2 pairs incl. self-pairs


def test_incremental_equals_full_and_costs_n_pairs(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    data = random_space(path, n_models=5, n_probe=6)
    rng = np.random.default_rng(9)
    compute_affinity(path, "grad_input")
    new_map = rng.normal(size=(6, 8, 8)).astype(np.float32)
    add_model(path, "new", {"grad_input": new_map}, rng.normal(size=(6, 16)))
    inc, stats = compute_affinity(path, "grad_input")
    assert stats == {"computed_pairs": 6, "cached_models": 5}  # N + the self-pair
    full, _ = compute_affinity(path, "grad_input", use_cache=False)
    np.testing.assert_allclose(inc.values, full.values, atol=1e-6)  # float32 products
    data["new"] = {"maps": {"grad_input": new_map}}
    np.testing.assert_allclose(inc.values, direct_affinity(data, "grad_input"), atol=1e-6)

    # remove then re-add under the same name with other maps: new uid -> recomputed
    remove_model(path, "m2")
    add_model(path, "m2", {"grad_input": -data["m2"]["maps"]["grad_input"]}, None)
    again, stats = compute_affinity(path, "grad_input")
    assert stats["cached_models"] == 5 and stats["computed_pairs"] == 6
    i, j = again.index("m2"), again.index("m0")
    assert again.values[i, j] == pytest.approx(-full.values[full.index("m2"), j], abs=1e-6)
    # removing a model drops it; the rest comes from the cache
    remove_model(path, "m4")
    after, stats = compute_affinity(path, "grad_input")
    assert "m4" not in after.names and stats["computed_pairs"] == 0


def test_small_memory_budget_gives_same_result(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    random_space(path, n_models=4, n_probe=10)
    big, _ = compute_affinity(path, "saliency", use_cache=False)
    # 1 KiB: one image per chunk and one model per block
    small, _ = compute_affinity(path, "saliency", use_cache=False, memory_bytes=1024)
    np.testing.assert_allclose(small.values, big.values, atol=1e-6)
    feats_big, _ = compute_affinity(path, "cka", use_cache=False)
    feats_small, _ = compute_affinity(path, "cka", use_cache=False, memory_bytes=1024)
    np.testing.assert_allclose(feats_small.values, feats_big.values, atol=1e-12)


def test_compressed_float16_maps_and_zero_maps(tmp_path: Path) -> None:
    path = create_space(tmp_path / "s.h5", 3, 4)
    a = np.arange(48, dtype=np.float32).reshape(3, 4, 4)
    add_model(path, "a", {"saliency": a}, dtype="float16", compress=True)
    add_model(path, "z", {"saliency": np.zeros_like(a)})
    m, _ = compute_affinity(path, "saliency")
    assert m.values[0, 0] == pytest.approx(1.0, abs=1e-3)
    assert m.values[0, 1] == 0.0 and m.values[1, 1] == 0.0  # zero maps: cosine 0, no NaN
    assert m.distance().values[0, 1] == DISTANCE_CAP  # affinity 0: capped, not inf
    assert m.values[0, 0] == 1.0  # exactly, by definition (not 1.0000001788)


def test_failed_update_keeps_old_cache(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "s.h5"
    random_space(path, n_models=3)
    first, _ = compute_affinity(path, "saliency")
    add_model(path, "late", {"saliency": np.ones((12, 8, 8))}, None)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(distances, "compute_pairs", boom)
    with pytest.raises(RuntimeError):
        compute_affinity(path, "saliency")
    monkeypatch.undo()
    with h5py.File(path, "a") as f:
        g = f[f"{distances.CACHE_ROOT}/maps.saliency"]
        assert len(g["uids"]) == 3  # untouched
        f[distances.CACHE_ROOT].create_group("maps.saliency.new")  # as if killed mid-write
    m, stats = compute_affinity(path, "saliency")
    assert stats["cached_models"] == 3 and m.names == ["late", "m0", "m1", "m2"]
    np.testing.assert_allclose(m.values[1:, 1:], first.values)
    with h5py.File(path, "r") as f:
        assert sorted(f[distances.CACHE_ROOT]) == ["maps.saliency"]


def test_new_probe_digest_invalidates_cache(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    random_space(path, n_models=3)
    compute_affinity(path, "saliency")
    with h5py.File(path, "a") as f:
        f["probe"].attrs["digest"] = "other"
    _, stats = compute_affinity(path, "saliency")
    assert stats["cached_models"] == 0


def test_models_without_data_are_excluded_or_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    random_space(path, n_models=3, methods=("saliency",))
    add_model(path, "only_elrp", {"elrp": np.ones((12, 8, 8))}, None)
    m, _ = compute_affinity(path, "saliency")
    assert m.excluded == ["only_elrp"]
    with pytest.raises(OnnxAttrError, match="without data for 'saliency': only_elrp"):
        compute_affinity(path, "saliency", ["m0", "only_elrp"])
    with pytest.raises(OnnxAttrError, match="not in"):
        compute_affinity(path, "saliency", ["m0", "ghost"])
    with pytest.raises(OnnxAttrError, match="does not exist"):
        compute_affinity(tmp_path / "none.h5", "saliency")


def test_matrix_io_and_ranking(tmp_path: Path) -> None:
    m = LabelledMatrix(["a", "b", "c"], [[1, .2, .5], [.2, 1, -.1], [.5, -.1, 1]], "affinity", "x")
    assert ranking(m, "a") == [("c", 0.5), ("b", 0.2)]
    d = m.distance()
    assert d.values[1, 2] == 100.0 and d.values[0, 2] == pytest.approx(2.0)
    assert [n for n, _ in ranking(d, "a")] == ["c", "b"]
    back = read_matrix_csv(write_matrix(m, tmp_path / "m.csv"))
    assert back.names == m.names
    np.testing.assert_array_equal(back.values, m.values)
    assert read_matrix_csv(write_matrix(d, tmp_path / "d.csv"), "distance").values[1, 2] == 100.0
    js = json.loads(write_matrix(d, tmp_path / "d.json").read_text())
    assert js["names"] == ["a", "b", "c"] and js["values"][1][2] == 100.0
    np.testing.assert_array_equal(np.load(write_matrix(m, tmp_path / "m.npy")), m.values)
    np.testing.assert_array_equal(affinity_to_distance(np.array([0.0, 4.0])), [100.0, 0.25])
    with pytest.raises(OnnxAttrError, match="not in the matrix"):
        ranking(m, "zz")
    (tmp_path / "bad.csv").write_text("model,a,b\na,1\n")
    with pytest.raises(OnnxAttrError, match="line 2"):
        read_matrix_csv(tmp_path / "bad.csv")


def test_distance_is_defined_and_finite_for_every_affinity() -> None:
    """d = 1/a above the floor (the paper's Np / sum cos), the cap at and below it, never inf;
    decreasing in a; the inverse recovers a on the range; NaN (unmeasured) stays NaN."""
    a = np.array([1.0, 0.5, 0.25, 0.02, 0.01, 0.004, 0.0, -0.3, -1.0, np.nan])
    d = affinity_to_distance(a)
    np.testing.assert_array_equal(d[:5], [1.0, 2.0, 4.0, 50.0, 100.0])
    np.testing.assert_array_equal(d[5:9], [DISTANCE_CAP] * 4)
    assert np.isnan(d[9]) and np.all(np.isfinite(d[:9])) and np.all(np.diff(d[:9]) >= 0)
    np.testing.assert_allclose(distance_to_affinity(d[:5]), a[:5])
    assert distance_to_affinity(np.array([np.inf]))[0] == 0.0  # old files wrote inf


def test_cli_output_has_no_inf_and_an_exact_diagonal(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from onnxattr.cli import app

    path = create_space(tmp_path / "s.h5", 4, 6)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 6, 6)).astype(np.float32)
    add_model(path, "a", {"saliency": base})
    add_model(path, "b", {"saliency": -base})  # anti-correlated: mean cosine -1
    add_model(path, "c", {"saliency": base + 0.1 * rng.normal(size=base.shape)})
    r = CliRunner().invoke(app, ["distance", "-s", str(path), "-m", "saliency", "-o",
                                 str(tmp_path / "o"), "-f", "csv", "-f", "json"])
    assert r.exit_code == 0, r.output
    for f in ("saliency_distance.csv", "saliency_affinity.csv", "saliency_distance.json"):
        text = (tmp_path / "o" / f).read_text()
        assert "inf" not in text.lower() and "null" not in text, f
    aff = read_matrix_csv(tmp_path / "o" / "saliency_affinity.csv")
    assert np.diagonal(aff.values).tolist() == [1.0, 1.0, 1.0]
    assert aff.values[0, 1] == pytest.approx(-1.0, abs=1e-6)
    rows = (tmp_path / "o" / "saliency_affinity.csv").read_text().splitlines()[1:]
    cells = [c for row in rows for c in row.split(",")[1:]]
    assert all(c == f"{float(c):.7g}" for c in cells), cells  # float32 precision, no noise digits
    dist = read_matrix_csv(tmp_path / "o" / "saliency_distance.csv", "distance")
    assert dist.values[0, 1] == DISTANCE_CAP and np.diagonal(dist.values).tolist() == [1.0] * 3
    r = CliRunner().invoke(app, ["rank", "a", "-s", str(path), "-m", "saliency"])
    assert r.exit_code == 0 and "inf" not in r.output and "100" in r.output, r.output
    # a combination ranks by summed z-scores: no distance column (1/a means nothing there)
    assert "distance" in r.output
    combo = "combine:saliency=0.5,saliency+abs=0.5"
    r = CliRunner().invoke(app, ["rank", "a", "-s", str(path), "-m", combo, "--bootstrap", "0"])
    assert r.exit_code == 0 and "distance" not in r.output and "affinity" in r.output, r.output
    r = CliRunner().invoke(app, ["distance", "-s", str(path), "-m", combo, "-o", str(tmp_path / "c")])
    assert r.exit_code == 0 and "no distance file" in r.output, r.output
    assert [p.name.rsplit("_", 1)[1] for p in (tmp_path / "c").iterdir()] == ["affinity.csv"]
