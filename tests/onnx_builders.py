"""Tiny ONNX graphs built with onnx.helper, and runners for onnxruntime and onnx2torch (shared by tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def init(name: str, value) -> onnx.TensorProto:
    """An initializer from a numpy-convertible value (dtype kept)."""
    return numpy_helper.from_array(np.asarray(value), name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple[str, Sequence[int | str | None]]],
    outputs: Sequence[str],
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = 13,
    ir_version: int | None = None,
    input_type: int = FLOAT,
) -> onnx.ModelProto:
    """A float model; outputs have no declared shape (onnxruntime infers them)."""
    graph = helper.make_graph(
        list(nodes),
        "tiny",
        [helper.make_tensor_value_info(n, input_type, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(n, FLOAT, None) for n in outputs],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version or min(model.ir_version, 10)
    return model


def run_ort(model: onnx.ModelProto, *arrays: np.ndarray) -> list[np.ndarray]:
    """All graph outputs computed by onnxruntime for positional inputs."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, arrays)))


def run_torch(model: onnx.ModelProto, *arrays: np.ndarray, mapping: bool = True) -> list[np.ndarray]:
    """All graph outputs of the onnx2torch conversion (as the pipeline converts: with onnx mapping)."""
    from onnx2torch import convert

    module = convert(model, attach_onnx_mapping=mapping).eval()
    with torch.no_grad():
        out = module(*[torch.from_numpy(a) for a in arrays])
    out = out if isinstance(out, (tuple, list)) else [out]
    return [o.numpy() for o in out]


def assert_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Elementwise closeness with an absolute floor scaled to the reference's magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * max(scale, 1.0))


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
