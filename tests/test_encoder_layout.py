"""One layout rule: the measured oracle (`transfer`) and the space (`add`'s features) read every
model's channels on the same axis, the one `onnxgraph.layout` decides from the graph."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from onnxattr.encoder import Encoder, load_encoder
from onnxattr.features import pool_features
from onnxattr.onnxgraph import graph
from onnxattr.onnxgraph.layout import channel_axes, input_layout
from onnxattr.transfer.sources import EncoderRunner
from tests.onnx_builders import init, make_model

BENCH = Path(__file__).resolve().parents[1] / "onnxattr" / "benchmark" / "data"
MANIFEST = json.loads((BENCH / "manifest.json").read_text())["models"]


def _space_features(enc: Encoder, images: np.ndarray) -> np.ndarray:
    """What `add` stores, pooled to one value per channel: the encoder's raw output read by its
    recorded channel axis."""
    sess = ort.InferenceSession(enc.model.SerializeToString(), providers=["CPUExecutionProvider"])
    raw = sess.run(None, {sess.get_inputs()[0].name: enc.preprocessing.apply(images).numpy()})[0]
    axis = enc.channel_axis.axis
    return pool_features(torch.from_numpy(raw), axis, max_dim=raw.shape[axis]).numpy()


def _assert_one_layout(path: Path | str, node: str | None, pre: dict | None) -> None:
    space = load_encoder(path, node, pre)
    oracle = EncoderRunner.from_file(path, node, pre)
    assert oracle.pre == space.preprocessing
    assert oracle.encoder.channel_axis == space.channel_axis
    # the full graph (what `onnxattr nodes` marks candidates on) reads the encoder tensor alike
    full = graph.load(path)
    in_axis = 3 if space.preprocessing.layout == "nhwc" else 1
    whole = channel_axes(full, in_axis).get(space.tensor)
    if whole is not None:
        assert whole.axis == space.channel_axis.axis
    h, w = space.preprocessing.input_size
    images = np.random.default_rng(0).integers(0, 255, (2, h, w, 3), dtype=np.uint8)
    out = oracle.run(images)
    if out.ndim == 4:  # the oracle's channels (axis 1, spatially averaged) are the features'
        np.testing.assert_allclose(
            out.mean(axis=(2, 3)), _space_features(space, images), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["name"] for e in MANIFEST])
def test_benchmark_encoders_one_layout(entry: dict) -> None:
    _assert_one_layout(BENCH / entry["file"], entry["encoder_node"], entry["preprocessing"])


def test_nhwc_input_channel_first_output_that_looks_channels_last(tmp_path: Path) -> None:
    """An NHWC model whose encoder runs channel-first and ends (N, C=8, H=8, W=4): a shape
    heuristic (two equal dims are the spatial pair) took it for NHWC; the graph says Conv."""
    weight = np.random.default_rng(0).standard_normal((8, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["enc"], strides=[1, 2]),
    ]
    model = make_model(nodes, [("x", [1, 8, 8, 3])], ["enc"], [init("w", weight)])
    path = tmp_path / "nhwc.onnx"
    path.write_bytes(model.SerializeToString())
    assert input_layout([1, 8, 8, 3]) == "nhwc"
    enc = load_encoder(path, "enc", None)
    assert enc.preprocessing.layout == "nhwc" and enc.channel_axis.axis == 1
    assert EncoderRunner.from_file(path, "enc").run(np.zeros((1, 8, 8, 3), np.uint8)).shape == (
        1, 8, 8, 4,
    )
    _assert_one_layout(path, "enc", None)


def _zoo_params() -> list:
    import model_zoo

    return [pytest.param(n, marks=pytest.mark.slow) for n in model_zoo.list_models(offline=True)]


@pytest.mark.parametrize("name", _zoo_params())
def test_zoo_models_one_layout(name: str) -> None:
    import model_zoo
    from tests.test_zoo import _need

    entry = _need(name)
    built = model_zoo.build_one(name)  # the shared cache, as test_zoo_first_hour builds them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_one_layout(built.path, entry.encoder_node, entry.preprocessing)
