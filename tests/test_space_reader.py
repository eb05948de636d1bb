"""SpaceReader against plain h5py reads of a space built by the factory."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from onnxattr.analysis.distances import pairwise_matrix
from onnxattr.analysis.estimators import MapCosine
from onnxattr.analysis.sketch import add_sketches
from onnxattr.errors import OnnxAttrError
from onnxattr.space_reader import read_space

from .space_factory import add_model, random_space


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.h5"
    return path, random_space(path, n_models=3, n_probe=6, size=4, dim=5)


def test_models_maps_features_and_probe_match_h5py(space):
    path, data = space
    with read_space(path) as r, h5py.File(path, "r") as f:
        assert r.names() == sorted(data) == sorted(f["models"])
        assert r.methods("m1") == ["grad_input", "saliency"]
        assert r.attrs("m0")["uid"] == f["models/m0"].attrs["uid"]
        assert r.map_shape("m2", "saliency") == (6, 4, 4)
        assert r.map_itemsize("m2", "saliency") == 4
        np.testing.assert_array_equal(r.maps("m1", "saliency"), f["models/m1/maps/saliency"][()])
        np.testing.assert_array_equal(r.maps("m1", "saliency", slice(2, 5)),
                                      f["models/m1/maps/saliency"][2:5])
        np.testing.assert_array_equal(r.maps("m1", "grad_input", [0, 3, 5]),
                                      f["models/m1/maps/grad_input"][[0, 3, 5]])
        np.testing.assert_array_equal(r.features("m2"), f["models/m2/features"][()])
        assert r.feature_shape("m2") == (6, 5)
        assert r.has_probe() and r.n_probe() == 6
        np.testing.assert_array_equal(r.probe_images([1, 4]), f["probe/images"][[1, 4]])
        assert r.probe_names() == [f"img{i}.png" for i in range(6)]
        assert r.probe_attrs()["size"] == 4


def test_low_precision_maps_are_decoded_with_their_scale(space):
    path, _ = space
    q = np.arange(6 * 4 * 4, dtype=np.int8).reshape(6, 4, 4)
    scale = np.linspace(0.5, 3.0, 6).astype(np.float32)
    add_model(path, "q", {"saliency": q}, dtype="int8")
    with h5py.File(path, "a") as f:
        f["models/q"].create_group("map_scale").create_dataset("saliency", data=scale)
    with read_space(path) as r:
        got = r.maps("q", "saliency", [1, 2])
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, q[[1, 2]] * scale[[1, 2], None, None])
        assert r.feature_shape("q") == () and not r.has_features("q")
        out = np.full((2, 4, 4), np.nan, np.float32)  # as stored: the scale cancels in cosines
        assert r.stored_maps("q", "saliency", slice(1, 3), out=out) is out
        np.testing.assert_array_equal(out, q[1:3])


def test_unknown_names_and_foreign_files_are_refused(space, tmp_path):
    path, _ = space
    with read_space(path) as r:
        with pytest.raises(OnnxAttrError, match="no model 'zz'"):
            r.attrs("zz")
        with pytest.raises(OnnxAttrError, match="no 'lrp' maps"):
            r.maps("m0", "lrp")
        with pytest.raises(ValueError, match="increasing"):
            r.maps("m0", "saliency", [3, 1])
    foreign = tmp_path / "foreign.h5"
    h5py.File(foreign, "w").close()
    with pytest.raises(OnnxAttrError, match="not written by onnxattr"):
        with read_space(foreign):
            pass


def test_what_the_estimators_read_uids_digest_sketches_and_the_cache(tmp_path):
    path = tmp_path / "space.h5"
    data = random_space(path, n_models=3, n_probe=6, size=4, dim=5)
    uid = add_model(path, "m3", {"saliency": data["m0"]["maps"]["saliency"]})
    add_sketches(path, ["saliency"], dims=8)
    with read_space(path) as r:
        assert r.uid("m3") == uid and len({r.uid(n) for n in r.names()}) == 4
        assert r.probe_digest() == "d0"
        out = np.empty((2, 4, 4), np.float32)
        r.stored_maps("m1", "saliency", slice(3, 5), out=out)
        np.testing.assert_array_equal(out, data["m1"]["maps"]["saliency"][3:5])
        assert r.has_sketch("m2", "saliency") and not r.has_sketch("m2", "grad_input")
        assert r.sketch_shape("m2", "saliency") == (6, 8)
        np.testing.assert_array_equal(r.sketch("m2", "saliency", 3), r.sketch("m2", "saliency")[:, :3])
        for name in r.names():
            r.verify_maps(name, "saliency")
            r.verify_sketch(name, "saliency")
        r.verify_features("m0")
        with pytest.raises(OnnxAttrError, match="no 'grad_input' sketch"):
            r.sketch("m2", "grad_input")
        with pytest.raises(OnnxAttrError, match="no stored features"):
            r.verify_features("m3")
        assert r.cached_pairs(MapCosine("saliency").cache_key) is None
    matrix, _ = pairwise_matrix(path, MapCosine("saliency"))
    with read_space(path) as r:
        attrs, uids, values = r.cached_pairs(MapCosine("saliency").cache_key)
        assert attrs["probe_digest"] == "d0"
        assert uids == [r.uid(n) for n in matrix.names]
        np.testing.assert_allclose(values, matrix.values, atol=1e-6)
    with h5py.File(path, "r") as f:  # the file that holds the sketch (the space, or a segment)
        ds = f["models/m1/sketch/saliency"]
        where, inside = ds.file.filename, ds.name
        del ds, r  # objects of a closed space can still hold a segment file open
    with h5py.File(where, "a") as f:  # a flipped sketch value is damage
        f[inside][0, 0] += 1
    with read_space(path) as r, pytest.raises(OnnxAttrError, match="checksum"):
        r.verify_sketch("m1", "saliency")
