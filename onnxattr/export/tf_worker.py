"""TensorFlow side of the Keras/TFLite recipes, run in its own process (`python -m`).

Why a subprocess: importing TensorFlow 2.21 before torch in one process segfaults, TF holds
~1 GB once imported, and a separate interpreter (e.g. a `.venv-tf`) can host TF where its pins
clash with the main environment. The worker converts one model with tf2onnx and stores the
original framework's output (Keras model or TFLite interpreter) on a seeded input next to the
ONNX file, so the parent can compare onnxruntime against it without importing TensorFlow.

Usage: python -m onnxattr.export.tf_worker, then one JSON job per stdin line (TensorFlow is
imported once for all jobs). Job keys: kind, source, out, opset, seed, and per kind:
encoder_tensor (tflite, optional), encoder_layer (keras_h5, keras_app), app/weights (keras_app).
A kind "package.module:function" names a job function elsewhere (the zoo's HED, the benchmark's
Keras twins): it gets the job and returns {"x", "refs", "reference"}, usually via `keras_convert`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

import numpy as np

ENCODER = "encoder"


def seeded_input(shape: list[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _tflite(job: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf
    import tf2onnx

    tf2onnx.convert.from_tflite(job["source"], opset=job["opset"], output_path=job["out"])
    # keep every tensor so the encoder tensor can be checked too (the full graph may hold
    # custom TFL_* ops after the encoder that onnxruntime cannot run)
    interp = tf.lite.Interpreter(model_path=job["source"], experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    x = seeded_input(list(inp["shape"]), job["seed"])
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    refs = {o["name"]: interp.get_tensor(o["index"]) for o in interp.get_output_details()}
    enc = job.get("encoder_tensor")
    if enc:
        (idx,) = [t["index"] for t in interp.get_tensor_details() if t["name"] == enc]
        refs[enc] = interp.get_tensor(idx)
    return {"x": x, "refs": refs, "reference": "tflite interpreter"}


def convert_fn(fn: Any, job: dict[str, Any], shape: list[int]) -> None:
    """Convert a tf function returning {"output_i": ..., "encoder": ...} with tf2onnx.

    tf2onnx names the graph outputs after the dict keys, so the encoder tensor is called
    'encoder' in the ONNX graph (the parent removes it from the graph outputs again).
    """
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec(shape, tf.float32, name="input")]
    tf2onnx.convert.from_function(
        tf.function(fn), input_signature=spec, opset=job["opset"], output_path=job["out"]
    )


def keras_convert(model: Any, extra: Any, job: dict[str, Any], shape: list[int]) -> dict:
    """Convert `model` with `extra` (an intermediate KerasTensor) added as output 'encoder';
    return the Keras outputs (and encoder) on the seeded input as references."""
    import keras

    outs = model.outputs if isinstance(model.outputs, list) else [model.outputs]
    two = keras.Model(model.inputs, [*outs, extra])
    names = [f"output_{i}" for i in range(len(outs))] + [ENCODER]
    convert_fn(lambda x: dict(zip(names, two(x, training=False))), job, shape)
    x = seeded_input(shape, job["seed"])
    refs = dict(zip(names, (np.asarray(t) for t in two(x, training=False))))
    return {"x": x, "refs": refs, "reference": "keras model"}


def _keras_h5(job: dict[str, Any]) -> dict[str, Any]:
    import keras

    model = keras.models.load_model(job["source"], compile=False)
    shape = [1, *model.input_shape[1:]]
    return keras_convert(model, model.get_layer(job["encoder_layer"]).output, job, shape)


def _keras_app(job: dict[str, Any]) -> dict[str, Any]:
    import keras

    model = getattr(keras.applications, job["app"])(weights=job["weights"])
    shape = [1, *model.input_shape[1:]]
    layer = model.get_layer(job["encoder_layer"])
    extra = layer.input if job.get("encoder_is_input") else layer.output
    return keras_convert(model, extra, job, shape)


def run(job: dict[str, Any]) -> dict[str, Any]:
    kind = job["kind"]
    if ":" in kind:
        module, _, name = kind.partition(":")
        fn = getattr(importlib.import_module(module), name)
    else:
        fn = {"tflite": _tflite, "keras_h5": _keras_h5, "keras_app": _keras_app}[kind]
    res = fn(job)
    np.savez(job["out"] + ".ref.npz", x=res["x"], **{"ref:" + k: v for k, v in res["refs"].items()})
    return {"reference": res["reference"], "outputs": list(res["refs"])}


def serve() -> None:
    """One job per stdin line; one `RESULT {json}` or `ERROR message` line per job on stdout."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = "RESULT " + json.dumps(run(json.loads(line)))
        except Exception as exc:  # reported to the parent, which raises OnnxAttrError
            msg = " ".join(str(exc).split())[:500] or type(exc).__name__
            reply = f"ERROR {type(exc).__name__}: {msg}"
        print(reply, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    serve()
