"""Stored features are pooled by the encoder tensor's own layout (decided from the graph), old spaces
pooled by the input layout are detected, and their features recomputed on request."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from onnx import helper
from typer.testing import CliRunner

from onnxattr.analysis.estimators import compute_affinity
from onnxattr.cli import app
from onnxattr.errors import OnnxAttrWarning
from onnxattr.features import check_features, pool_features
from onnxattr.onnxgraph import graph
from onnxattr.pipeline import add_model
from onnxattr.preprocess import Preprocessing
from onnxattr.probe import build_probe
from onnxattr.space import ModelSpace

from .onnx_builders import init, make_model, rand, run_ort

C = 16  # encoder channels; the encoder map is C x 8 x 8, so no spatial pooling (8x8 grid)


def nhwc_model(back_to_nhwc: bool = False, seed: int = 0):
    """TFLite-style graph: NHWC input, Transpose to NCHW, Conv, Relu = encoder, then a head."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node(
            "Conv", ["x_nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv"
        ),
        helper.make_node("Relu", ["conv"], ["enc"], name="enc"),
    ]
    if back_to_nhwc:
        nodes.append(
            helper.make_node("Transpose", ["enc"], ["enc_nhwc"], perm=[0, 2, 3, 1], name="to_nhwc")
        )
        nodes.append(helper.make_node("Sigmoid", ["enc_nhwc"], ["enc2"], name="enc2"))
    nodes.append(helper.make_node("GlobalAveragePool", ["enc"], ["head"], name="head"))
    return make_model(
        nodes,
        [("x", ["N", 16, 16, 3])],
        ["head"],
        [init("w", rand(C, 3, 3, 3, seed=seed) * 0.3), init("b", rand(C, seed=seed + 1) * 0.1)],
    )


def test_channel_axis_follows_transposes_from_the_input():
    m = nhwc_model(back_to_nhwc=True)
    assert graph.channel_axis(m, "enc", input_axis=3).axis == 1  # after Conv: NCHW
    assert "Conv" in graph.channel_axis(m, "enc", 3).reason
    assert graph.channel_axis(m, "enc2", 3).axis == 3  # transposed back to NHWC, then Sigmoid
    assert graph.channel_axis(m, "x_nchw", 3).axis == 1  # input NHWC, one Transpose
    assert graph.channel_axis(m, "x", 3).axis == 3  # the input itself


def test_channel_axis_of_a_reshaped_tensor_says_it_assumed():
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"], name="r"),
        helper.make_node("Relu", ["r"], ["y"], name="y"),
    ]
    m = make_model(nodes, [("x", [1, 4, 4, 3])], ["y"], [init("shape", np.array([1, 3, 4, 4]))])
    ca = graph.channel_axis(m, "y", 3)
    assert ca.axis == 1 and "assumed" in ca.reason


def test_pool_features_moves_the_channel_axis():
    x = torch.randn(2, 5, 6, 7)  # N, H, W, C
    np.testing.assert_allclose(
        pool_features(x, channel_axis=3).numpy(), pool_features(x.permute(0, 3, 1, 2), 1).numpy()
    )


def _reference(space, onnx_model) -> np.ndarray:
    """Encoder output by onnxruntime on the preprocessed probe, flattened channel-first."""
    probe = ModelSpace(space).read_probe()
    pre = Preprocessing(input_size=(16, 16), layout="nhwc", color="rgb")
    enc = graph.truncate(onnx_model, "enc")
    (out,) = run_ort(enc, pre.apply(probe.images).numpy())
    assert out.shape[1:] == (C, 8, 8)
    return out.reshape(len(out), -1)


@pytest.fixture
def nhwc_space(tmp_path):
    import onnx

    m = nhwc_model()
    path = tmp_path / "tfl.onnx"
    onnx.save(m, path)
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(build_probe(None, size=32, n=4, seed=0))
    add_model(
        space,
        path,
        encoder_node="enc",
        name="tfl",
        methods=["saliency"],
        preprocessing={"preset": "unit"},
        progress=False,
    )
    add_model(
        space,
        path,
        encoder_node="enc",
        name="tfl2",
        methods=["saliency"],
        preprocessing={"preset": "unit"},
        progress=False,
    )
    return space, m


def test_nhwc_input_nchw_encoder_features_keep_the_channels(nhwc_space):
    space, m = nhwc_space
    feats = ModelSpace(space).read_features("tfl")
    assert feats.shape == (4, C * 64)
    # stored with 10 mantissa bits (MapStorage.feature_bits): relative error <= 2^-11
    np.testing.assert_allclose(feats, _reference(space, m), rtol=2.0**-10, atol=1e-5)
    rec = json.loads(
        next(r for r in ModelSpace(space).models() if r.name == "tfl").attrs["features_pooling"]
    )
    assert rec["channel_axis"] == 1 and rec["encoder_shape"] == [C, 8, 8] and rec["dim"] == C * 64
    assert [c.status for c in check_features(space)] == ["ok", "ok"]


def _make_legacy(space, name: str) -> None:
    """What an older onnxattr stored: features pooled as if the NCHW tensor were NHWC."""
    with h5py.File(space, "a") as f:
        g = f[f"models/{name}"]
        del g.attrs["features_pooling"]
        x = torch.from_numpy(g["features"][()].reshape(-1, C, 8, 8))
        old = pool_features(x, channel_axis=3).numpy()  # the old rule: permute(0, 3, 1, 2)
        del g["features"]
        g.create_dataset("features", data=old)


def test_old_space_detected_warned_and_recomputed(nhwc_space):
    space, m = nhwc_space
    for name in ("tfl", "tfl2"):
        _make_legacy(space, name)
    assert ModelSpace(space).read_features("tfl").shape[1] != C * 64
    checks = {c.name: c for c in check_features(space)}
    assert checks["tfl"].status == "wrong" and "axis 3" in checks["tfl"].detail
    with pytest.warns(OnnxAttrWarning, match="tfl, tfl2.*--recompute"):
        compute_affinity(space, "cka")
    r = CliRunner().invoke(app, ["features", "-s", str(space)])
    assert r.exit_code == 0 and "wrong" in r.output and "--recompute" in r.output
    r = CliRunner().invoke(app, ["features", "-s", str(space), "--recompute"])
    assert r.exit_code == 0, r.output
    assert "wrong" not in r.output
    np.testing.assert_allclose(
        ModelSpace(space).read_features("tfl"), _reference(space, m), rtol=2.0**-10, atol=1e-5
    )
    aff, _ = compute_affinity(space, "cka")  # no stale cache: identical features, CKA 1
    np.testing.assert_allclose(aff.values, 1.0, atol=1e-6)


def test_features_unknown_model_is_one_line(nhwc_space):
    space, _ = nhwc_space
    r = CliRunner().invoke(app, ["features", "nope", "-s", str(space)])
    assert r.exit_code == 1 and "no model 'nope'" in r.output and "Traceback" not in r.output
