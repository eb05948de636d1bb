"""Graph inspection, encoder resolution and truncation on hand-built ONNX graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxattr.errors import OnnxAttrError
from onnxattr.onnxgraph import graph


def classifier_with_custom_head() -> onnx.ModelProto:
    """Conv -> Relu -> GAP -> Flatten -> Gemm -> a custom-domain op no runtime knows."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(size=(2, 4)).astype(np.float32), "fc")
    unused = numpy_helper.from_array(np.ones(7, np.float32), "unused")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], name="fc", transB=1),
        helper.make_node("TFL_Whatever", ["logits", "unused"], ["y"], name="custom", domain="tfl.custom"),
    ]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w, fc, unused],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                               helper.make_opsetid("tfl.custom", 1)])


def test_truncate_keeps_exactly_the_dependencies():
    m = classifier_with_custom_head()
    t = graph.truncate(m, graph.resolve_encoder(m, "gap"))
    assert [n.name for n in t.graph.node] == ["conv", "relu", "gap"]
    assert {i.name for i in t.graph.initializer} == {"w"}
    assert [o.name for o in t.graph.output] == ["g"]
    assert {o.domain for o in t.opset_import} == {""}
    onnx.checker.check_model(t)
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    (got,) = ort.InferenceSession(t.SerializeToString()).run(None, {"x": x})
    conv = ort.InferenceSession(graph.truncate(m, "c").SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, np.maximum(conv, 0).mean((2, 3), keepdims=True), rtol=1e-5)


def test_encoder_by_node_or_tensor_name_and_suggestions():
    m = classifier_with_custom_head()
    assert graph.resolve_encoder(m, "relu") == "r"
    assert graph.resolve_encoder(m, "f") == "f"
    with pytest.raises(OnnxAttrError, match=r"node 'relux' not found; did you mean 'relu'"):
        graph.resolve_encoder(m, "relux")


def test_nodes_have_shapes_and_candidates():
    infos = {i.name: i for i in graph.list_nodes(classifier_with_custom_head())}
    assert infos["conv"].shapes[0] == [None, 4, 8, 8]
    assert infos["flat"].shapes[0] == [None, 4]
    assert infos["flat"].candidate.startswith("pre-logits")
    assert not infos["conv"].candidate


def test_shapes_fall_back_to_onnxruntime(monkeypatch):
    m = classifier_with_custom_head()
    sub = graph.truncate(m, "f")
    monkeypatch.setattr(graph.shape_inference, "infer_shapes", lambda model, **kw: model)
    shapes = graph.infer_shapes(sub)
    assert shapes["r"] == [None, 4, 8, 8] and shapes["f"] == [None, 4]


def test_external_data_loads(tmp_path):
    m = classifier_with_custom_head()
    onnx.save_model(m, str(tmp_path / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)
    assert (tmp_path / "m.onnx.data").exists()
    loaded = graph.load(tmp_path / "m.onnx")
    assert numpy_helper.to_array(loaded.graph.initializer[0]).shape == (4, 3, 3, 3)


def test_not_onnx_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model")
    with pytest.raises(OnnxAttrError, match="not a readable ONNX model"):
        graph.load(bad)
