"""The same network written in Keras and in PyTorch lands at the same point of the model space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from onnxattr.pipeline import add_model
from onnxattr.space import ModelSpace

from .conftest import random_probe
from .models import export

pytestmark = pytest.mark.tf


def keras_and_torch():
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    inp = keras.Input((24, 24, 3), batch_size=None)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    kmodel = keras.Model(inp, x)
    rng = np.random.default_rng(0)
    tnet = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()).eval()
    for klayer, tlayer in zip([kmodel.layers[1], kmodel.layers[3]], [tnet[0], tnet[3]]):
        kernel = rng.normal(0, 0.3, size=klayer.get_weights()[0].shape).astype(np.float32)
        bias = rng.normal(0, 0.1, size=klayer.get_weights()[1].shape).astype(np.float32)
        klayer.set_weights([kernel, bias])
        # Keras kernels are (kh, kw, in, out); torch wants (out, in, kh, kw)
        tlayer.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        tlayer.bias.data = torch.from_numpy(bias)
    return tf, kmodel, tnet


def test_keras_and_torch_models_coincide(tmp_path):
    tf, kmodel, tnet = keras_and_torch()
    tf2onnx = pytest.importorskip("tf2onnx")
    kpath = tmp_path / "keras.onnx"
    tf2onnx.convert.from_keras(
        kmodel, input_signature=[tf.TensorSpec((None, 24, 24, 3), tf.float32, name="image")],
        opset=17, output_path=str(kpath),
    )
    tpath = export(tnet, tmp_path / "torch.onnx", (1, 3, 24, 24))

    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(random_probe(n=6, size=40))
    add_model(space, kpath, name="keras", preprocessing={"preset": "imagenet"}, progress=False)
    add_model(space, tpath, name="torch", preprocessing={"preset": "imagenet"}, progress=False)

    s = ModelSpace(space)
    attrs = {r.name: r.attrs for r in s.models()}
    assert '"nhwc"' in attrs["keras"]["preprocessing"] and '"nchw"' in attrs["torch"]["preprocessing"]
    for method in ("saliency", "grad_input", "elrp"):
        a, b = s.read_maps("keras", method), s.read_maps("torch", method)
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() >= 0.999, (method, cos)
