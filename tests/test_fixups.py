"""Fix-up passes on tiny graphs: onnxruntime on the original vs onnxruntime and onnx2torch on the fixed graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxattr.onnxgraph.converters  # noqa: F401  (run_torch converts with onnxattr's converters, e.g. Pad-19)
from onnxattr.errors import OnnxAttrError
from onnxattr.onnxgraph.fixups import SINGLE_IMAGE, Fix, fix_up

from .onnx_builders import assert_close, init, make_model, rand, run_ort, run_torch


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=init(name, value))


def changes(fixes: list[Fix]) -> list[tuple[str, str, int]]:
    """What the passes changed, as (pass, code, count): the structured records, not their prose."""
    return [(f.fixup, f.code, f.count) for f in fixes]


def _check(original, fixed, x, rtol=1e-5):
    expected = run_ort(original, x)
    for got in (run_ort(fixed, x), run_torch(fixed, x)):
        for g, e in zip(got, expected):
            assert_close(g, e, rtol=rtol)


def test_clean_graph_is_left_alone():
    w = rand(4, 3, 3, 3)
    model = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        [("x", ["n", 3, 8, 8])],
        ["y"],
        [init("w", w)],
    )
    fixed, notes = fix_up(model, (1, 3, 8, 8))
    assert notes == []
    assert fixed.graph == model.graph


def test_constant_weights_become_initializers():
    nodes = [
        _const("w", rand(4, 3, 3, 3)),
        _const("b", rand(4, seed=1)),
        helper.make_node("Constant", [], ["shape"], value_ints=[0, -1]),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["y"]),
    ]
    model = make_model(nodes, [("x", ["n", 3, 5, 5])], ["y"])
    x = rand(1, 3, 5, 5, seed=2)
    with pytest.raises(KeyError):  # what real paddle2onnx graphs hit
        run_torch(model, x)
    fixed, notes = fix_up(model, x.shape)
    assert changes(notes) == [("constant-weights", "constant-nodes", 3)]
    assert not [n for n in fixed.graph.node if n.op_type == "Constant"]
    _check(model, fixed, x)


def test_nodes_on_constants_only_are_folded():
    """torch's legacy exporter shares equal biases through Identity; tf2onnx transposes/casts weights."""
    nodes = [
        helper.make_node("Identity", ["b0"], ["b"]),
        helper.make_node("Transpose", ["w_hwio"], ["w_t"], perm=[3, 2, 0, 1]),
        helper.make_node("Cast", ["w_t"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [init("b0", rand(4, seed=1)), init("w_hwio", rand(3, 3, 3, 4).astype(np.float16))]
    model = make_model(nodes, [("x", ["n", 3, 5, 5])], ["y"], inits)
    x = rand(2, 3, 5, 5, seed=2)
    with pytest.raises(KeyError):
        run_torch(model, x)
    fixed, notes = fix_up(model, x.shape)
    assert changes(notes) == [("constant-weights", "constant-folded", 3)]
    assert notes[0].detail["ops"] == {"Cast": 1, "Identity": 1, "Transpose": 1}
    assert [n.op_type for n in fixed.graph.node] == ["Conv"]
    assert {t.name for t in fixed.graph.initializer} == {"b", "w"}
    _check(model, fixed, x)


def test_reshape_allowzero_without_zero_is_dropped():
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)]
    model = make_model(nodes, [("x", ["n", 3, 4])], ["y"], [init("s", np.array([-1, 12]))], opset=14)
    x = rand(2, 3, 4, seed=3)
    with pytest.raises(NotImplementedError):
        run_torch(model, x)
    fixed, notes = fix_up(model, x.shape)
    assert changes(notes) == [("reshape", "reshape-allowzero", 1)]
    _check(model, fixed, x)


@pytest.mark.parametrize(("mode", "opset"), [("DCR", 13), ("CRD", 13), (None, 7)])
def test_depth_to_space_dcr_becomes_reshape_transpose(mode, opset):
    """The one path for DCR at every opset (DepthToSpace-1 has no mode: always DCR)."""
    attrs = {} if mode is None else {"mode": mode}
    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, **attrs)
    model = make_model([node], [("x", ["n", 8, 3, 2])], ["y"], opset=opset)
    x = rand(2, 8, 3, 2, seed=4)
    fixed, notes = fix_up(model, x.shape)
    if mode == "CRD":  # onnx2torch converts CRD itself
        assert notes == [] and fixed.graph == model.graph
        return
    with pytest.raises(NotImplementedError):
        run_torch(model, x)
    assert changes(notes) == [("depth-to-space", "depth-to-space-dcr", 1)]
    _check(model, fixed, x)
    _check(model, fixed, rand(3, 8, 3, 2, seed=5))


def test_constant_weights_ir3_lists_initializers_as_inputs():
    nodes = [
        _const("w", rand(2, 3)),
        helper.make_node("Identity", ["w"], ["w2"]),
        helper.make_node("MatMul", ["x", "w2"], ["y"]),
    ]
    model = make_model(nodes, [("x", ["n", 2])], ["y"], opset=8, ir_version=3)
    fixed, notes = fix_up(model, (1, 2))
    assert changes(notes) == [("constant-weights", "constant-nodes", 1),
                              ("constant-weights", "constant-folded", 1)]
    assert notes[1].detail["ops"] == {"Identity": 1}
    assert {i.name for i in fixed.graph.input} == {"x", "w2"}
    _check(model, fixed, rand(1, 2, seed=1))


@pytest.mark.parametrize(
    ("op", "mode", "size", "attrs"),
    [
        ("Conv", "SAME_UPPER", 7, {"strides": [2, 2]}),
        ("Conv", "SAME_LOWER", 7, {"strides": [2, 2]}),
        ("Conv", "SAME_UPPER", 8, {"strides": [3, 3], "kernel_shape": [3, 3]}),
        ("Conv", "VALID", 8, {"strides": [2, 2]}),
        ("ConvTranspose", "SAME_UPPER", 5, {"strides": [2, 2]}),
        ("ConvTranspose", "SAME_LOWER", 5, {"strides": [2, 2]}),
        ("MaxPool", "SAME_UPPER", 7, {"strides": [2, 2], "kernel_shape": [3, 3]}),
        ("MaxPool", "SAME_LOWER", 6, {"strides": [2, 2], "kernel_shape": [2, 2]}),
        ("AveragePool", "SAME_UPPER", 6, {"kernel_shape": [3, 3]}),
        ("AveragePool", "VALID", 6, {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ],
)
def test_auto_pad_becomes_explicit(op, mode, size, attrs):
    inputs, inits = ["x"], []
    if op.startswith("Conv"):
        shape = (4, 3, 3, 3) if op == "Conv" else (3, 4, 3, 3)
        inputs.append("w")
        inits.append(init("w", rand(*shape, seed=1)))
    node = helper.make_node(op, inputs, ["y"], auto_pad=mode, **attrs)
    model = make_model([node], [("x", ["n", 3, size, size])], ["y"], initializers=inits)
    x = rand(2, 3, size, size, seed=3)
    fixed, notes = fix_up(model, x.shape)
    assert changes(notes)[0] == ("explicit-pads", "auto-pad", 1)
    assert {f.fixup for f in notes} == {"explicit-pads"}  # + asymmetric pads it may produce
    assert notes[0].detail["modes"] == [mode]
    assert all(a.name != "auto_pad" for n in fixed.graph.node for a in n.attribute)
    _check(model, fixed, x)


@pytest.mark.parametrize(
    ("attrs", "opset"),
    [
        ({"auto_pad": "SAME_UPPER", "kernel_shape": [3, 3], "strides": [2, 2]}, 13),
        ({"auto_pad": "SAME_LOWER", "kernel_shape": [2, 3], "count_include_pad": 1}, 13),
        ({"pads": [0, 1, 1, 2], "kernel_shape": [3, 3], "strides": [1, 2]}, 13),  # as tf2onnx writes
        ({"pads": [1, 0, 0, 1], "kernel_shape": [2, 2], "count_include_pad": 1}, 9),
        # AveragePool-19/22 (dilations): the same rewrite, the converter takes symmetric pads only
        ({"pads": [1, 0, 1, 2], "kernel_shape": [2, 3], "dilations": [2, 2]}, 19),
        ({"pads": [0, 1, 1, 1], "kernel_shape": [3, 3], "strides": [2, 1], "count_include_pad": 1}, 22),
        ({"pads": [0, 0, 2, 1], "kernel_shape": [3, 2], "dilations": [1, 2], "strides": [2, 2]}, 22),
    ],
)
def test_asymmetric_average_pool_becomes_pad_and_pool(attrs, opset):
    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    model = make_model([node], [("x", ["n", 3, 6, 7])], ["y"], opset=opset)
    x = rand(2, 3, 6, 7, seed=6)
    fixed, notes = fix_up(model, x.shape)
    codes = changes(notes)
    assert ("explicit-pads", "asymmetric-average-pool", 1) in codes
    assert {(p, code) for p, code, _ in codes} <= {("explicit-pads", "auto-pad"),
                                                   ("explicit-pads", "asymmetric-average-pool")}
    _check(model, fixed, x)


def test_auto_pad_needs_input_shape():
    node = helper.make_node("MaxPool", ["x"], ["y"], auto_pad="SAME_UPPER", kernel_shape=[3, 3])
    model = make_model([node], [("x", ["n", 3, "h", "w"])], ["y"])
    with pytest.raises(OnnxAttrError, match="give the input shape"):
        fix_up(model)


def test_asymmetric_conv_transpose_pads_become_slice():
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[0, 1, 2, 1])
    model = make_model([node], [("x", ["n", 3, 4, 4])], ["y"], [init("w", rand(3, 2, 3, 3))])
    x = rand(1, 3, 4, 4, seed=5)
    with pytest.raises(NotImplementedError):
        run_torch(model, x)
    fixed, notes = fix_up(model, x.shape)
    assert changes(notes) == [("explicit-pads", "asymmetric-conv-transpose", 1)]
    _check(model, fixed, x)


def _shape_via_float_math(nodes_out: str) -> list[onnx.NodeProto]:
    """A Reshape whose target shape is computed through float arithmetic: plain ONNX shape
    inference (what onnx2torch runs) loses the rank of its output."""
    return [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sf", "one"], ["sf1"]),
        helper.make_node("Cast", ["sf1"], ["si"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "si"], [nodes_out]),
    ]


def test_missing_shapes_get_value_info():
    bn = [init(n, v) for n, v in zip("gbmv", (rand(3) + 2, rand(3, seed=1), rand(3, seed=2), rand(3, seed=3) ** 2 + 1))]
    nodes = _shape_via_float_math("r") + [
        helper.make_node("BatchNormalization", ["r", "g", "b", "m", "v"], ["y"])
    ]
    model = make_model(nodes, [("x", ["n", 3, 4, 4])], ["y"], [init("one", np.float32(1.0)), *bn])
    x = rand(2, 3, 4, 4, seed=4)
    with pytest.raises(NotImplementedError, match="spatial rank"):
        run_torch(model, x)
    fixed, notes = fix_up(model, x.shape)
    assert [(f.fixup, f.code) for f in notes] == [("shapes", "shapes-onnxruntime")]
    rank = {v.name: len(v.type.tensor_type.shape.dim) for v in fixed.graph.value_info}
    assert rank["r"] == 4
    _check(model, fixed, x)
    _check(model, fixed, rand(3, 3, 4, 4, seed=5))  # value_info leaves the batch open


def _conv_matmul_float() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "wm"], ["y"]),
    ]
    inits = [init("wc", rand(4, 3, 3, 3)), init("bc", rand(4, seed=1)), init("wm", rand(64, 5, seed=2))]
    return make_model(nodes, [("x", ["n", 3, 4, 4])], ["y"], inits)


def test_dequantize_constant_weights_are_folded():
    rng = np.random.default_rng(0)
    wq = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    scale = (rng.random(4) * 0.02 + 0.01).astype(np.float32)
    zp = np.array([0, 1, -2, 3], np.int8)
    bq = rng.integers(-500, 500, 4).astype(np.int32)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["bq", "bs"], ["b"]),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [init("wq", wq), init("ws", scale), init("wz", zp), init("bq", bq), init("bs", np.float32(0.001))]
    model = make_model(nodes, [("x", ["n", 3, 5, 5])], ["y"], inits)
    x = rand(1, 3, 5, 5, seed=3)
    fixed, notes = fix_up(model, x.shape)
    assert changes(notes) == [("quantized", "dequantize-weights", 2)]
    assert [n.op_type for n in fixed.graph.node] == ["Conv"]
    _check(model, fixed, x)
    # independent reference: the dequantized weights computed by hand
    w = (wq.astype(np.float32) - zp[:, None, None, None]) * scale[:, None, None, None]
    ref = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
        [("x", ["n", 3, 5, 5])],
        ["y"],
        [init("w", w), init("b", bq.astype(np.float32) * 0.001)],
    )
    assert_close(run_torch(fixed, x)[0], run_ort(ref, x)[0])


def test_qdq_pairs_are_removed_and_weights_folded(tmp_path):
    """Static QDQ as onnxruntime's quantize_static writes it, on activations and weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rand(1, 3, 4, 4, seed=s)} for s in range(4)])

        def get_next(self):
            return next(self.batches, None)

    float_model = _conv_matmul_float()
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(float_model, src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ)
    quantized = onnx.load(dst)
    assert any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    x = rand(1, 3, 4, 4, seed=7)
    fixed, notes = fix_up(quantized, x.shape)
    assert changes(notes) == [("quantized", "dequantize-weights", 3), ("quantized", "qdq-pairs", 4)]
    ops = {n.op_type for n in fixed.graph.node}
    assert ops == {"Conv", "Clip", "Flatten", "MatMul"}
    # The quantizer fused the Relu into the Conv output's QDQ pair (zero point = 0): the Clip keeps
    # it. The fixed graph equals ORT on the quantized one up to the dropped activation rounding.
    q_out, fixed_out, float_out = run_ort(quantized, x)[0], run_ort(fixed, x)[0], run_ort(float_model, x)[0]
    assert_close(run_torch(fixed, x)[0], fixed_out)
    assert np.abs(fixed_out - q_out).max() / np.abs(q_out).max() < 0.03
    assert np.abs(fixed_out - float_out).max() / np.abs(float_out).max() < 0.03


@pytest.mark.filterwarnings("ignore")
def test_qoperator_qlinear_ops_become_float(tmp_path):
    """onnxruntime's QOperator format: QLinearConv -> Flatten (on uint8) -> QLinearMatMul."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rand(1, 3, 4, 4, seed=s)} for s in range(4)])

        def get_next(self):
            return next(self.batches, None)

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_conv_matmul_float(), src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator)
    quantized = onnx.load(dst)
    assert {"QLinearConv", "QLinearMatMul"} <= {n.op_type for n in quantized.graph.node}
    x = rand(1, 3, 4, 4, seed=7)
    fixed, notes = fix_up(quantized, x.shape)
    assert changes(notes) == [("quantized", "qdq-pairs", 3), ("quantized", "qlinear-ops", 2)]
    assert [n.op_type for n in fixed.graph.node] == ["Clip", "Conv", "Flatten", "Clip", "MatMul", "Clip"]
    q_out, fixed_out = run_ort(quantized, x)[0], run_ort(fixed, x)[0]
    assert_close(run_torch(fixed, x)[0], fixed_out)
    assert np.abs(fixed_out - q_out).max() / np.abs(q_out).max() < 0.03


@pytest.mark.filterwarnings("ignore")
def test_qoperator_contrib_ops_become_float(tmp_path):
    """QLinearAdd, QLinearGlobalAveragePool and QGemm (com.microsoft), as on a residual network."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rand(1, 4, 5, 5, seed=s)} for s in range(4)])

        def get_next(self):
            return next(self.batches, None)

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["r", "x"], ["a"]),
        helper.make_node("GlobalAveragePool", ["a"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "g", "gb"], ["y"], transB=1),
    ]
    inits = [init("w", rand(4, 4, 3, 3)), init("b", rand(4, seed=1)), init("g", rand(3, 4, seed=2)),
             init("gb", rand(3, seed=3))]
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(make_model(nodes, [("x", [1, 4, 5, 5])], ["y"], inits), src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator)
    quantized = onnx.load(dst)
    contrib = {n.op_type for n in quantized.graph.node if n.domain == "com.microsoft"}
    assert {"QLinearAdd", "QLinearGlobalAveragePool"} <= contrib
    x = rand(1, 4, 5, 5, seed=7)
    fixed, notes = fix_up(quantized, x.shape)
    assert any((f.fixup, f.code) == ("quantized", "qlinear-ops") for f in notes), notes
    assert not [n for n in fixed.graph.node if n.domain or "Quantize" in n.op_type]
    q_out, fixed_out = run_ort(quantized, x)[0], run_ort(fixed, x)[0]
    assert_close(run_torch(fixed, x)[0], fixed_out)
    assert np.abs(fixed_out - q_out).max() / np.abs(q_out).max() < 0.05


def test_dynamic_int8_matmul_and_conv_become_float(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_model = _conv_matmul_float()
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(float_model, src)
    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Conv"]
    )
    quantized = onnx.load(dst)
    assert {"MatMulInteger", "ConvInteger"} <= {n.op_type for n in quantized.graph.node}
    x = rand(1, 3, 4, 4, seed=8)
    fixed, notes = fix_up(quantized, x.shape)
    assert ("quantized", "dynamic-int8", 2) in changes(notes)
    ops = {n.op_type for n in fixed.graph.node}
    assert {"Conv", "MatMul"} <= ops
    assert not ops & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "Cast"}
    # hand reference: the float graph with W = (W_q - zp) * scale from the quantized initializers
    q = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    ref = onnx.ModelProto()
    ref.CopyFrom(float_model)
    for t in ref.graph.initializer:
        if t.name in ("wc", "wm"):
            w = (q[f"{t.name}_quantized"].astype(np.float32) - q[f"{t.name}_zero_point"]) * q[f"{t.name}_scale"]
            t.CopyFrom(init(t.name, w.astype(np.float32)))
    assert_close(run_torch(fixed, x)[0], run_ort(ref, x)[0])
    q_out = run_ort(quantized, x)[0]
    assert np.abs(run_ort(fixed, x)[0] - q_out).max() / np.abs(q_out).max() < 0.05


def test_batch_baked_into_reshape_is_relaxed():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["f"]),  # [1, 4, 16] exported at batch 1
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[2], keepdims=0),
        helper.make_node("Reshape", ["m", "shape2"], ["y"]),  # [1, -1]
    ]
    inits = [init("w", rand(4, 3, 3, 3)), init("shape", np.array([1, 4, 16])), init("shape2", np.array([1, -1]))]
    model = make_model(nodes, [("x", [1, 3, 4, 4])], ["y"], inits)
    fixed, notes = fix_up(model, (1, 3, 4, 4))
    assert changes(notes) == [("batch", "batch-reshapes", 2), ("batch", "batch-input-relaxed", 1)]
    assert notes[1].detail == {"input": "x", "batch": 1}
    xs = rand(3, 3, 4, 4, seed=9)
    expected = np.concatenate([run_ort(model, xs[i : i + 1])[0] for i in range(3)])
    assert_close(run_ort(fixed, xs)[0], expected)
    assert_close(run_torch(fixed, xs)[0], expected)


def test_class_token_exported_at_batch_1_is_expanded():
    """ViT: Concat(cls_token [1, 1, D], patches [N, P, D]) then Reshape to [1, P+1, heads, D/heads]."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], kernel_shape=[2, 2]),
        helper.make_node("Reshape", ["c", "s1"], ["p"]),  # [1, 4, 4]: batch baked
        helper.make_node("Transpose", ["p"], ["t"], perm=[0, 2, 1]),  # [N, 4 patches, 4 dims]
        helper.make_node("Concat", ["cls", "t"], ["tokens"], axis=1),  # [N, 5, 4]
        helper.make_node("Reshape", ["tokens", "s2"], ["heads"]),  # [1, 5, 2, 2]
        helper.make_node("ReduceMean", ["heads"], ["y"], axes=[1], keepdims=0),
    ]
    inits = [
        init("w", rand(4, 3, 2, 2)), init("s1", np.array([1, 4, 4])), init("cls", rand(1, 1, 4, seed=1)),
        init("s2", np.array([1, 5, 2, 2])),
    ]
    model = make_model(nodes, [("x", [1, 3, 4, 4])], ["y"], inits)
    fixed, notes = fix_up(model, (1, 3, 4, 4))
    assert changes(notes) == [("batch", "batch-reshapes", 2), ("batch", "batch-constants", 1),
                              ("batch", "batch-input-relaxed", 1)]
    xs = rand(3, 3, 4, 4, seed=9)
    expected = np.concatenate([run_ort(model, xs[i : i + 1])[0] for i in range(3)])
    assert_close(run_ort(fixed, xs)[0], expected)
    assert_close(run_torch(fixed, xs)[0], expected)


def test_batch_that_cannot_be_relaxed_is_reported():
    nodes = [  # a batch-1 constant picked by index: not something the pass can tell is a batch
        helper.make_node("Gather", ["x", "i"], ["g"], axis=0),
        helper.make_node("Add", ["x", "g"], ["y"]),
    ]
    model = make_model(nodes, [("x", [1, 4])], ["y"], [init("i", np.array([0]))])
    fixed, notes = fix_up(model, (1, 4))
    assert changes(notes) == [("batch", SINGLE_IMAGE, 1)]
    assert fixed.graph == model.graph


def test_passes_run_in_declared_order_and_new_ones_register(monkeypatch):
    from onnxattr.onnxgraph import fixups

    assert [p.name for p in fixups.list_fixups()] == [
        "constant-weights", "quantized", "explicit-pads", "reshape", "depth-to-space", "batch",
        "shapes"]
    monkeypatch.setitem(fixups.FIXUPS, "renamed-relu", None)  # the registration is undone afterwards
    seen = []

    @fixups.register_fixup("renamed-relu", order=35, description="Relu nodes get a name")
    def name_relus(model, dims):
        seen.append([p.name for p in fixups.list_fixups()])
        unnamed = [n for n in model.graph.node if n.op_type == "Relu" and not n.name]
        for i, n in enumerate(unnamed):
            n.name = f"relu{i}"
        return [Fix("relu-named", len(unnamed), f"{len(unnamed)} Relu named")] if unnamed else []

    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", ["n", 4])], ["y"])
    fixed, notes = fix_up(model, (1, 4))
    assert seen[0].index("renamed-relu") == 3  # after explicit-pads (30), before reshape (40)
    assert changes(notes) == [("renamed-relu", "relu-named", 1)]
    assert str(notes[0]) == "renamed-relu: 1 Relu named"
    assert notes[0].to_dict() == {"code": "relu-named", "count": 1, "message": "1 Relu named",
                                  "detail": {}, "fixup": "renamed-relu"}
    assert fixed.graph.node[0].name == "relu0" and model.graph.node[0].name == ""
