"""Checks on every zoo model (nox session tests_zoo: needs the zoo's wheels, TensorFlow for some):
`nodes`' ★ candidate against the manifest's documented encoder (also on random-init recipes of
other architecture families), and the channel axis of the encoder tensor (decided from the graph)
against the architecture the manifest documents."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import model_zoo
from onnxattr.onnxgraph import graph
from onnxattr.pipeline import load_encoder
from tests.test_candidates import same_encoder
from tests.test_zoo import _need

pytestmark = pytest.mark.slow

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
    return model_zoo.build_one(_need(name).name)  # the shared cache: built once per session


@pytest.mark.parametrize("name", model_zoo.list_models(offline=True))
def test_nodes_candidate_is_the_documented_encoder(name):
    """`nodes` stars exactly one node, and it is the zoo's documented encoder (up to views and
    global average pooling, which give onnxattr the same encoder: see same_encoder)."""
    b = _built(name)
    model = graph.load(b.path)
    starred = [i for i in graph.list_nodes(model) if i.candidate]
    assert len(starred) == 1, [(i.name, i.candidate) for i in starred]
    assert same_encoder(model, starred[0].outputs[0], b.entry.encoder_node), (
        b.entry.encoder_node,
        starred[0].outputs[0],
        starred[0].candidate,
    )


#: Recipes beyond the 18 offline models, on random weights (no download), one per architecture
#: family the heuristic was not developed on: an MLP head with HardSwish, a DenseNet, a vision
#: transformer (class token), a ConvNeXt (LayerNorm head), a Keras ResNet, a Taskonomy encoder.
RANDOM_INIT = [
    ("tv_mobilenet_v3_large", "torchvision"),
    ("tv_densenet121", "torchvision"),
    ("timm_vit_small_patch16_224", "timm"),
    ("timm_convnext_tiny", "timm"),
    ("keras_resnet50", "tensorflow"),
    ("taskonomy_rgb2depth", "visualpriors"),
]


@pytest.mark.parametrize(("name", "module"), RANDOM_INIT)
def test_nodes_candidate_on_random_init_recipes(name, module, tmp_path):
    pytest.importorskip(module)
    if model_zoo.get(name).needs_tf:
        pytest.importorskip("tf2onnx")
    b = model_zoo.build_one(name, tmp_path, pretrained=False)
    model = graph.load(b.path)
    (star,) = [i for i in graph.list_nodes(model) if i.candidate]
    assert same_encoder(model, star.outputs[0], b.entry.encoder_node), (
        b.entry.encoder_node,
        star.outputs[0],
        star.candidate,
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
