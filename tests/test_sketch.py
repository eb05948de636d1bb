"""Per-image random-projection sketches: stored by add (and kept with pending maps), checked by
`check`, backfilled by `onnxattr sketch`, and estimator sketch:<method> agrees with the exact
map cosine."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from onnxattr.analysis.estimators import compute_affinity, list_estimators
from onnxattr.analysis.sketch import SKETCH_DIM, add_sketches, sketch_maps
from onnxattr.cli import app
from onnxattr.errors import OnnxAttrError
from onnxattr.integrity import check_space, salvage
from onnxattr.pipeline import add_model
from onnxattr.space import DEFAULT_STORAGE, ModelSpace

from .conftest import random_probe
from .models import TinyVGG, export
from .space_factory import add_model as add_raw
from .space_factory import create_space


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _sk_cos(sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
    return _cos(sa.astype(np.float64), sb.astype(np.float64))


def test_sketch_cosines_are_unbiased_within_the_jl_bound():
    rng = np.random.default_rng(0)
    n, s, k = 400, 32, 256
    a, b = rng.normal(size=(2, n, s, s)).astype(np.float32)
    b = 0.6 * a + 0.8 * b  # cosine ~0.6 per image
    err = _sk_cos(sketch_maps(a, k=k), sketch_maps(b, k=k)) - _cos(a, b)
    # JL (Gaussian): P(|err| > 0.25) <= 4 exp(-k (e^2 - e^3) / 4) = 0.20 for k = 256; the
    # subsampled orthogonal transform does better than that bound
    assert np.mean(np.abs(err) > 0.25) <= 0.20
    assert np.std(err) < 1.2 * (1 - 0.6**2) / np.sqrt(k)  # ~ (1 - c^2)/sqrt(k): far below 1/sqrt(k)
    assert abs(err.mean()) < 4 * np.std(err) / np.sqrt(n)  # the affinity, a mean, is unbiased


def test_sketch_is_exact_when_it_keeps_every_coefficient_and_zero_maps_stay_zero():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 5, 8, 8)).astype(np.float32)
    a[2] = 0
    sa, sb = sketch_maps(a, k=64), sketch_maps(b, k=1000)  # k >= d: the whole transform
    assert sa.shape == sb.shape == (5, 64)
    assert not sa[2].any()
    keep = [0, 1, 3, 4]
    # exact up to the stored rounding (3 mantissa bits: cosine with the unrounded >= 0.992)
    np.testing.assert_allclose(_sk_cos(sa[keep], sb[keep]), _cos(a[keep], b[keep]), atol=0.02)


def test_projections_depend_on_the_image_index_not_the_batch():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(6, 16, 16)).astype(np.float32)
    whole = sketch_maps(maps)
    np.testing.assert_array_equal(
        np.concatenate([sketch_maps(maps[:2]), sketch_maps(maps[2:], 2)]), whole
    )
    # another image index gets another projection: the errors of different images are independent
    assert not np.array_equal(sketch_maps(maps[:1], 1), whole[:1])


def _planted_space(tmp_path, n=32, s=24, models=12, seed=1):
    rng = np.random.default_rng(seed)
    path = tmp_path / "s.h5"
    space = ModelSpace(path)
    space.write_probe(random_probe(n=n, size=s))
    base = rng.normal(size=(n, s, s)).astype(np.float32)
    for i, noise in enumerate(np.linspace(0.2, 3.0, models)):
        m = (base + noise * rng.normal(size=base.shape)).astype(np.float32)
        space.add_encoded(
            f"m{i}",
            {"elrp": DEFAULT_STORAGE.encode(m)},
            np.zeros((n, 2)),
            {},
            sketches={"elrp": sketch_maps(m)},
        )
    return path


def test_sketch_estimator_ranks_agree_with_exact(tmp_path):
    path = _planted_space(tmp_path)
    exact, _ = compute_affinity(path, "elrp", use_cache=False)
    approx, stats = compute_affinity(path, "sketch:elrp")
    assert approx.estimator == "sketch:elrp" and approx.names == exact.names
    iu = np.triu_indices(12, 1)
    assert spearmanr(exact.values[iu], approx.values[iu])[0] >= 0.99
    assert np.abs(exact.values[iu] - approx.values[iu]).max() < 0.03
    again, stats = compute_affinity(path, "sketch:elrp")  # cached like every pairwise estimator
    assert stats["computed_pairs"] == 0 and np.array_equal(again.values, approx.values)
    # fewer of the stored dimensions: a valid (coarser) sketch, cached under its own key
    coarse, _ = compute_affinity(path, "sketch:elrp", sketch_dims=64)
    assert coarse.estimator == "sketch:elrp@64"
    assert 0.0 < np.abs(coarse.values - approx.values)[iu].max() < 0.15
    assert spearmanr(exact.values[iu], coarse.values[iu])[0] >= 0.9


def test_sketch_estimator_errors(tmp_path):
    assert "sketch" in [e.name for e in list_estimators()]
    path = _planted_space(tmp_path, models=3)
    with pytest.raises(OnnxAttrError, match="map options do not apply to sketches"):
        compute_affinity(path, "sketch:elrp+abs")
    with pytest.raises(OnnxAttrError, match="give at most 576"):
        compute_affinity(path, "sketch:elrp", sketch_dims=5000)
    old = create_space(tmp_path / "old.h5", 4, 8)
    for name in ("a", "b"):
        add_raw(old, name, {"elrp": np.random.default_rng(0).normal(size=(4, 8, 8))})
    with pytest.raises(OnnxAttrError, match="found 0 .*`onnxattr sketch SPACE`"):
        compute_affinity(old, "sketch:elrp")


def test_backfill_matches_what_add_stores(tmp_path):
    """`onnxattr sketch` computes the sketches that models of older versions lack."""
    rng = np.random.default_rng(3)
    old = create_space(tmp_path / "old.h5", 6, 16)
    maps = {n: rng.normal(size=(6, 16, 16)).astype(np.float32) for n in ("a", "b", "c")}
    for n, m in maps.items():
        add_raw(old, n, {"elrp": m, "saliency": np.abs(m)})
    r = CliRunner().invoke(app, ["sketch", str(old), "--methods", "elrp"])
    assert r.exit_code == 0, r.output
    assert "3 model(s) sketched" in r.output
    with h5py.File(old) as f:
        for n, m in maps.items():
            np.testing.assert_array_equal(f[f"models/{n}/sketch/elrp"][()], sketch_maps(m))
            assert "saliency" not in f[f"models/{n}/sketch"]
    assert add_sketches(old, ["elrp"]) == {}  # nothing left to do
    found = {x.path: x.level for x in check_space(old).findings}
    assert all(found[f"models/{n}/sketch/elrp"] == "ok" for n in maps)  # sealed with a checksum
    approx, _ = compute_affinity(old, "sketch:elrp")
    assert approx.names == ["a", "b", "c"]


def test_add_stores_sketches_and_keeps_them_with_pending_maps(tmp_path, monkeypatch):
    model = export(TinyVGG(), tmp_path / "v.onnx", (1, 3, 32, 32))
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(random_probe(n=3, size=32))
    add_model(space, model, name="small", methods=["saliency"], map_size=16, progress=False)
    with h5py.File(space) as f:  # 16x16 maps: a sketch of 256 numbers would save nothing
        assert "sketch" not in f["models/small"]
    monkeypatch.setattr("onnxattr.analysis.sketch.SKETCH_MIN_RATIO", 0)  # as for maps >= 128²
    add_model(space, model, methods=["saliency"], map_size=16, progress=False)
    with h5py.File(space) as f:
        stored = f["models/v/sketch/saliency"][()]
        maps = f["models/v/maps/saliency"][()].astype(np.float32)
    assert stored.shape == (3, min(SKETCH_DIM, 16 * 16)) and stored.dtype == np.float16
    # the stored sketch is that of the attribution map (stored maps: 3 mantissa bits)
    assert (_sk_cos(stored, sketch_maps(maps)) > 0.99).all()

    real = ModelSpace.add_encoded

    def busy(self, *a, **k):
        raise OnnxAttrError(f"{self.path} is still in use by another onnxattr process after 1 s")

    monkeypatch.setattr(ModelSpace, "add_encoded", busy)
    with pytest.raises(OnnxAttrError, match="computed maps are kept"):
        add_model(space, model, name="w", methods=["saliency"], progress=False)
    with h5py.File(ModelSpace(space).pending_path("w")) as f:
        assert f["sketch/saliency"].shape == stored.shape
    monkeypatch.setattr(ModelSpace, "add_encoded", real)
    add_model(space, model, name="w", methods=["saliency"], progress=False)
    with h5py.File(space) as f:
        np.testing.assert_array_equal(f["models/w/sketch/saliency"][()], stored)


def test_check_reports_a_damaged_sketch_and_salvage_keeps_the_model(tmp_path):
    path = _planted_space(tmp_path, models=3)
    with h5py.File(path, "r+") as f:
        f["models/m1/sketch/elrp"][0, :4] = 7.0  # changed after its checksum was taken
    report = check_space(path)
    bad = [x for x in report.damaged if x.path == "models/m1/sketch/elrp"]
    assert bad and "checksum" in bad[0].detail and "`onnxattr sketch`" in bad[0].detail
    assert report.models["m1"]  # maps and features intact: the model is not lost
    salvage(path, tmp_path / "new.h5")
    with h5py.File(tmp_path / "new.h5") as f:
        assert "elrp" not in f["models/m1/sketch"] and "elrp" in f["models/m0/sketch"]
    assert check_space(tmp_path / "new.h5").ok
    add_sketches(tmp_path / "new.h5")
    assert check_space(tmp_path / "new.h5").ok


def test_rank_with_sketches_and_its_probe_bootstrap(tmp_path):
    from onnxattr.api import rank

    path = _planted_space(tmp_path, models=4)
    r = CliRunner().invoke(app, ["rank", "m0", "--space", str(path), "--method", "sketch:elrp"])
    assert r.exit_code == 0, r.output
    assert "sketch:elrp" in r.output and "bootstrap draws" in r.output
    approx = [nb.name for nb in rank(path, "m0", "sketch:elrp")]
    assert approx[:2] == [nb.name for nb in rank(path, "m0", "elrp")][:2] == ["m1", "m2"]
