"""Keras twins of the benchmark's task networks; imported only inside the TensorFlow worker
(`onnxattr.export.tf_worker`, job kind ``onnxattr.benchmark.keras_twin:job``): TF and torch in
one process segfault.

Same encoder as :func:`onnxattr.benchmark.models.resnet_encoder` (conv-BN-ReLU stem, two basic
blocks, widths 16/24/32, 'same' padding). The decoder is linear like the PyTorch one: a 3×3
convolution, nearest upsampling and a 3×3 convolution (Keras has no PixelShuffle layer).
"""

from __future__ import annotations

from typing import Any


def build_and_train(job: dict[str, Any]) -> tuple[Any, Any]:
    """Train on the job's npz (x: NHWC inputs, y: NHWC/ids/classes); return (model, encoder)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(int(job["seed"]))
    with np.load(job["source"]) as data:
        x, y = data["x"], data["y"]
    L = keras.layers
    a, b, c = job["widths"]

    def conv_bn(t: Any, ch: int, stride: int) -> Any:
        return L.BatchNormalization()(L.Conv2D(ch, 3, stride, padding="same", use_bias=False)(t))

    def block(t: Any, ch: int, stride: int) -> Any:
        h = conv_bn(L.ReLU()(conv_bn(t, ch, stride)), ch, 1)
        s = L.BatchNormalization()(L.Conv2D(ch, 1, stride, use_bias=False)(t))
        return L.ReLU()(L.Add()([h, s]))

    inp = keras.Input(x.shape[1:])
    enc = block(block(L.ReLU()(conv_bn(inp, a, 2)), b, 2), c, 2)
    kind, ch = job["task_kind"], int(job["channels"])
    h = L.Conv2D(4 * ch, 3, padding="same")(enc)
    out = L.Conv2D(ch, 3, padding="same")(L.UpSampling2D(2)(h))
    loss: Any = (
        "mse"
        if kind == "dense_reg"
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model = keras.Model(inp, out)
    bs, epochs = int(job["batch_size"]), int(job["epochs"])
    steps = epochs * -(-len(x) // bs)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)), loss)
    model.fit(x, y, batch_size=bs, epochs=epochs, verbose=0, shuffle=True)
    return model, enc


def job(spec: dict[str, Any]) -> dict[str, Any]:
    """The worker job: train the twin, convert it with its encoder tensor named 'encoder'."""
    from onnxattr.export.tf_worker import keras_convert

    model, encoder = build_and_train(spec)
    return keras_convert(model, encoder, spec, [1, *model.input_shape[1:]])
