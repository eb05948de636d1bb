"""Each converter registered by onnxattr.onnxgraph.converters against onnxruntime on a tiny graph at that opset."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, defs, helper

from onnxattr.errors import OnnxAttrError
from onnxattr.onnxgraph.converters import (
    _NEW_ATTRIBUTE_IRRELEVANT,
    _OLD_SAME_SIGNATURE,
    _SAME_SIGNATURE,
    check_convertible,
)
from onnxattr.onnxgraph.fixups import fix_up

from .onnx_builders import assert_close, init, make_model, rand, run_ort, run_torch

N = helper.make_node
F32 = TensorProto.FLOAT


def _check(model, *xs, rtol=1e-5, atol=1e-6):
    expected = run_ort(model, *xs)
    got = run_torch(model, *xs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, e.astype(np.float32), rtol=rtol, atol=atol)


def _to_float(name: str = "t") -> onnx.NodeProto:
    return N("Cast", [name], ["y"], to=F32)


# ------------------------------------------------------------------- version bumps on old converters
def _signature(op: str, version: int):
    s = defs.get_schema(op, version)
    return (
        s.since_version,
        [(i.name, i.option) for i in s.inputs],
        [(o.name, o.option) for o in s.outputs],
        {k: str(a.default_value) for k, a in s.attributes.items()},
    )


@pytest.mark.parametrize(("op", "new", "old"), _SAME_SIGNATURE + _OLD_SAME_SIGNATURE)
def test_type_only_bump_has_the_same_signature(op, new, old):
    since, ins, outs, attrs = _signature(op, new)
    assert since == new
    assert (ins, outs, attrs) == _signature(op, old)[1:]


_ADDED = {("Cast", 19): {"saturate"}, ("Cast", 21): {"saturate"}, ("MaxPool", 1): {"storage_order"}}


@pytest.mark.parametrize(("op", "new", "old"), _NEW_ATTRIBUTE_IRRELEVANT)
def test_other_bumps_differ_only_as_documented(op, new, old):
    since, ins, outs, attrs = _signature(op, new)
    _, ins0, outs0, attrs0 = _signature(op, old)
    assert since == new and ins == ins0 and outs[:1] == outs0[:1]
    assert set(attrs) ^ set(attrs0) == _ADDED[op, new]


def _x(shape=(2, 3, 5, 5)):
    return [("x", list(shape))]


# op -> (nodes, initializers, input shape, input transform); every graph ends in float "y"
_BUMPS = {
    "Acos": ([N("Acos", ["x"], ["y"])], [], (2, 4), np.tanh),
    "Asin": ([N("Asin", ["x"], ["y"])], [], (2, 4), np.tanh),
    "Atan": ([N("Atan", ["x"], ["y"])], [], (2, 4), None),
    "Cos": ([N("Cos", ["x"], ["y"])], [], (2, 4), None),
    "Sin": ([N("Sin", ["x"], ["y"])], [], (2, 4), None),
    "Tan": ([N("Tan", ["x"], ["y"])], [], (2, 4), np.tanh),
    "Conv": ([N("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
             [init("w", rand(4, 3, 3, 3)), init("b", rand(4, seed=1))], (2, 3, 5, 5), None),
    "ConvTranspose": ([N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])],
                      [init("w", rand(3, 2, 3, 3))], (2, 3, 5, 5), None),
    "MaxPool": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
                [], (2, 3, 5, 5), None),
    "GlobalAveragePool": ([N("GlobalAveragePool", ["x"], ["y"])], [], (2, 3, 5, 5), None),
    "Constant": ([N("Constant", [], ["c"], value=init("c", rand(2, 4, seed=3))), N("Add", ["x", "c"], ["y"])],
                 [], (2, 4), None),
    "ConstantOfShape": ([N("Shape", ["x"], ["s"]),
                         N("ConstantOfShape", ["s"], ["c"], value=init("v", np.array([2.5], np.float32))),
                         N("Mul", ["x", "c"], ["y"])], [], (2, 4), None),
    "Dropout": ([N("Dropout", ["x"], ["y"])], [], (2, 4), None),
    "Elu": ([N("Elu", ["x"], ["y"], alpha=0.7)], [], (2, 4), None),
    "Equal": ([N("Round", ["x"], ["r"]), N("Equal", ["r", "z"], ["t"]), _to_float()],
              [init("z", np.zeros(4, np.float32))], (3, 4), lambda a: a * 0.6),
    "EyeLike": ([N("EyeLike", ["x"], ["e"], k=1), N("Add", ["x", "e"], ["y"])], [], (3, 4), None),
    "Flatten": ([N("Flatten", ["x"], ["y"], axis=2)], [], (2, 3, 4, 5), None),
    "Gemm": ([N("Gemm", ["x", "w", "c"], ["y"], alpha=0.5, transB=1)],
             [init("w", rand(3, 4, seed=1)), init("c", rand(3, seed=2))], (2, 4), None),
    "GreaterOrEqual": ([N("GreaterOrEqual", ["x", "z"], ["t"]), _to_float()],
                       [init("z", np.zeros(4, np.float32))], (3, 4), None),
    "LessOrEqual": ([N("LessOrEqual", ["x", "z"], ["t"]), _to_float()],
                    [init("z", np.zeros(4, np.float32))], (3, 4), None),
    "HardSigmoid": ([N("HardSigmoid", ["x"], ["y"], alpha=0.3)], [], (2, 4), lambda a: a * 3),
    "HardSwish": ([N("HardSwish", ["x"], ["y"])], [], (2, 4), lambda a: a * 4),
    "Identity": ([N("Identity", ["x"], ["y"])], [], (2, 4), None),
    "InstanceNormalization": ([N("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)],
                              [init("s", rand(3, seed=1)), init("b", rand(3, seed=2))], (2, 3, 4, 4), None),
    "IsInf": ([N("Div", ["x", "z"], ["d"]), N("IsInf", ["d"], ["t"]), _to_float()],
              [init("z", np.array([0, 1, 0, 1], np.float32))], (2, 4), None),
    "IsNaN": ([N("Div", ["x", "z"], ["d"]), N("IsNaN", ["d"], ["t"]), _to_float()],
              [init("z", np.array([0, 1, 0, 1], np.float32))], (2, 4), lambda a: a * (a > 0)),
    "Reshape": ([N("Reshape", ["x", "s"], ["y"])], [init("s", np.array([0, -1]))], (2, 3, 4), None),
    "Round": ([N("Round", ["x"], ["y"])], [], (2, 4), lambda a: a * 3),
    "ScatterND": ([N("ScatterND", ["x", "i", "u"], ["y"])],
                  [init("i", np.array([[1], [3]])), init("u", rand(2, 3, seed=4))], (4, 3), None),
    "Selu": ([N("Selu", ["x"], ["y"])], [], (2, 4), None),
    "Shape": ([N("Shape", ["x"], ["t"], start=1), _to_float()], [], (2, 3, 4), None),
    "Softplus": ([N("Softplus", ["x"], ["y"])], [], (2, 4), None),
    "Softsign": ([N("Softsign", ["x"], ["y"])], [], (2, 4), None),
    "Transpose": ([N("Transpose", ["x"], ["y"], perm=[2, 0, 1])], [], (2, 3, 4), None),
    "Unsqueeze": ([N("Unsqueeze", ["x", "a"], ["y"])], [init("a", np.array([0, -1]))], (2, 3), None),
    "Cast": ([N("Cast", ["x"], ["t"], to=TensorProto.INT32), _to_float()], [], (2, 4), lambda a: a * 5),
    "ArgMax": ([N("ArgMax", ["x"], ["t"], axis=1, keepdims=0), _to_float()], [], (3, 5), None),
    "ArgMin": ([N("ArgMin", ["x"], ["t"], axis=0), _to_float()], [], (3, 5), None),
    "Max": ([N("Max", ["x", "c", "x"], ["y"])], [init("c", rand(3, 4, seed=1))], (3, 4), None),
    "Min": ([N("Min", ["x", "c"], ["y"])], [init("c", rand(3, 4, seed=1))], (3, 4), None),
    "Mean": ([N("Mean", ["x", "c"], ["y"])], [init("c", rand(3, 4, seed=1))], (3, 4), None),
    "Sum": ([N("Sum", ["x", "c", "x"], ["y"])], [init("c", rand(3, 4, seed=1))], (3, 4), None),
}


@pytest.mark.parametrize(
    ("op", "new", "old"), _SAME_SIGNATURE + _OLD_SAME_SIGNATURE + _NEW_ATTRIBUTE_IRRELEVANT
)
def test_version_bump_matches_onnxruntime(op, new, old):
    nodes, inits, shape, transform = _BUMPS[op]
    opset = max(new, 7)  # onnxruntime runs opset 7 and later
    assert defs.get_schema(op, opset).since_version == new
    model = make_model(nodes, _x(shape), ["y"], inits, opset=opset)
    x = rand(*shape, seed=11)
    _check(model, transform(x) if transform else x)


# ------------------------------------------------------------------------------------------ Reduce
_REDUCE = ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
           "ReduceMin", "ReduceProd", "ReduceSumSquare"]


@pytest.mark.parametrize("opset", [18, 20])
@pytest.mark.parametrize("op", _REDUCE)
@pytest.mark.parametrize(
    ("axes", "keepdims", "noop"),
    [([1], 1, 0), ([-1, 1], 0, 0), (None, 1, 0), (None, 0, 0), (None, 1, 1), ("dynamic", 0, 0)],
)
def test_reduce_18(op, opset, axes, keepdims, noop):
    inputs, inits, nodes = ["x"], [], []
    if axes == "dynamic":  # axes computed in the graph: passed at run time
        inits.append(init("a0", np.array([2, 0])))
        nodes.append(N("Identity", ["a0"], ["a"]))
        inputs.append("a")
    elif axes is not None:
        inits.append(init("a", np.array(axes)))
        inputs.append("a")
    nodes.append(N(op, inputs, ["y"], keepdims=keepdims, noop_with_empty_axes=noop))
    model = make_model(nodes, _x((2, 3, 4)), ["y"], inits, opset=opset)
    x = np.abs(rand(2, 3, 4, seed=2)) + 0.5  # positive: ReduceLogSum
    _check(model, x, rtol=2e-5)


# ------------------------------------------------------------------------------------------- Split
@pytest.mark.parametrize(
    ("outputs", "split", "axis"), [(3, None, 1), (2, [2, 5], 1), (1, None, 0), (2, None, -1)]
)
def test_split_18(outputs, split, axis):
    inits, inputs = [], ["x"]
    if split is not None:
        inits.append(init("s", np.array(split)))
        inputs.append("s")
    attrs = {"num_outputs": outputs} if split is None else {}
    names = [f"o{i}" for i in range(outputs)]
    node = N("Split", inputs, names, axis=axis, **attrs)
    model = make_model([node], _x((2, 7, 6)), names, inits, opset=18)
    _check(model, rand(2, 7, 6, seed=3))


# --------------------------------------------------------------------------------------------- Pad
@pytest.mark.parametrize(
    ("opset", "mode", "pads", "value", "axes"),
    [
        (18, "constant", [0, 0, 1, 2, 0, 0, 2, 1], 1.5, None),
        (18, "constant", [1, 2, 2, 0], None, [2, 3]),
        (18, "constant", [1, -1, 0, 2], 0.5, [-1, 1]),
        (18, "reflect", [1, 2, 2, 1], None, [2, 3]),
        (19, "edge", [0, 1, 2, 0, 0, 2, 1, 0], None, None),
        (19, "wrap", [2, 1, 1, 2], None, [2, 3]),
        (21, "constant", [0, 0, 1, 1, 0, 0, 1, 1], 0.0, None),
    ],
)
def test_pad_18_19_21(opset, mode, pads, value, axes):
    inits = [init("p", np.array(pads))]
    inputs = ["x", "p", "", ""]
    if value is not None:
        inits.append(init("v", np.array(value, np.float32)))
        inputs[2] = "v"
    if axes is not None:
        inits.append(init("a", np.array(axes)))
        inputs[3] = "a"
    while inputs[-1] == "":
        inputs.pop()
    model = make_model([N("Pad", inputs, ["y"], mode=mode)], _x((2, 3, 4, 5)), ["y"], inits, opset=opset)
    _check(model, rand(2, 3, 4, 5, seed=4))


def test_pad_with_runtime_pads():
    nodes = [N("Identity", ["p0"], ["p"]), N("Pad", ["x", "p"], ["y"], mode="constant")]
    model = make_model(nodes, _x((1, 2, 3, 3)), ["y"], [init("p0", np.array([0, 0, 1, 0, 0, 0, 0, 2]))], opset=18)
    _check(model, rand(1, 2, 3, 3, seed=5))


# ------------------------------------------------------------------------------------------ Resize
_RESIZE_CASES = [
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, [1, 1, 2, 3], None, None),
    ({"mode": "nearest"}, [1, 1, 1.7, 0.6], None, None),
    ({"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn",
      "nearest_mode": "round_prefer_ceil"}, None, [2, 3, 9, 4], None),
    ({"mode": "nearest", "coordinate_transformation_mode": "align_corners", "nearest_mode": "ceil"}, None, [2, 3, 7, 11], None),
    ({"mode": "linear"}, [1, 1, 2, 2], None, None),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [2, 3, 9, 3], None),
    ({"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, [1, 1, 1.5, 0.5], None, None),
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, None, [2, 3, 1, 8], None),
    ({"mode": "cubic"}, [1, 1, 2, 1.5], None, None),
    ({"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}, None, [2, 3, 8, 9], None),
    ({"mode": "linear", "axes": [2, 3]}, [2.0, 3.0], None, None),
    ({"mode": "linear", "axes": [3]}, None, [7], None),
    ({"mode": "linear", "keep_aspect_ratio_policy": "not_larger", "axes": [2, 3]}, None, [10, 20], None),
    ({"mode": "nearest", "keep_aspect_ratio_policy": "not_smaller", "axes": [2, 3]}, None, [10, 20], None),
    ({"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, [1, 1, 1.7, 2.3], None, 19),
    ({"mode": "nearest", "coordinate_transformation_mode": "half_pixel_symmetric"}, None, [2, 3, 7, 3], 19),
]


@pytest.mark.parametrize(("attrs", "scales", "sizes", "opset"), _RESIZE_CASES)
def test_resize_18_19(attrs, scales, sizes, opset):
    inits, inputs = [], ["x", ""]
    if scales is not None:
        inits.append(init("sc", np.array(scales, np.float32)))
        inputs.append("sc")
    else:
        inits.append(init("sz", np.array(sizes)))
        inputs += ["", "sz"]
    model = make_model([N("Resize", inputs, ["y"], **attrs)], _x((2, 3, 5, 6)), ["y"], inits, opset=opset or 18)
    _check(model, rand(2, 3, 5, 6, seed=6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("opset", "mode"), [(7, "nearest"), (7, "linear"), (9, "nearest"), (9, "linear")]
)
def test_upsample_7_9(opset, mode):
    scales = [1.0, 1.0, 2.0, 3.0]
    if opset < 9:
        node, inits = N("Upsample", ["x"], ["y"], mode=mode, scales=scales), []
    else:
        node, inits = N("Upsample", ["x", "s"], ["y"], mode=mode), [init("s", np.array(scales, np.float32))]
    model = make_model([node], _x((1, 2, 3, 4)), ["y"], inits, opset=opset)
    _check(model, rand(1, 2, 3, 4, seed=7))


# ------------------------------------------------------------------------------------- AveragePool
@pytest.mark.parametrize("opset", [19, 22])
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 0, 1, 2]},
        {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [0, 1, 1, 1], "count_include_pad": 1},
        {"kernel_shape": [3, 2], "pads": [0, 0, 2, 1]},
    ],
)
def test_average_pool_19_22(opset, attrs):
    model = make_model([N("AveragePool", ["x"], ["y"], **attrs)], _x((2, 3, 7, 8)), ["y"], opset=opset)
    x = rand(2, 3, 7, 8, seed=8)
    pads = attrs.get("pads", [0] * 4)
    if pads[:2] == pads[2:]:
        _check(model, x)
        return
    # asymmetric pads have one path at every opset, the fix-up `explicit-pads`: the converter
    # refuses them with that hint, and the fixed graph converts and matches onnxruntime
    with pytest.raises(NotImplementedError, match="asymmetric pads: run onnxattr's fix_up first"):
        run_torch(model, x)
    fixed, fixes = fix_up(model, x.shape)
    assert ("explicit-pads", "asymmetric-average-pool", 1) in [(f.fixup, f.code, f.count) for f in fixes]
    for got, expected in zip(run_torch(fixed, x), run_ort(model, x)):
        assert_close(got, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ others
def test_batch_normalization_7():
    stats = [init(n, v) for n, v in zip("sbmv", (rand(3) + 2, rand(3, seed=1), rand(3, seed=2), rand(3, seed=3) ** 2 + 1))]
    model = make_model([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
                       _x((2, 3, 4, 4)), ["y"], stats, opset=7)
    model.graph.value_info.append(helper.make_tensor_value_info("x", F32, [2, 3, 4, 4]))
    _check(model, rand(2, 3, 4, 4, seed=9))


def test_slice_1():
    node = N("Slice", ["x"], ["y"], starts=[1, 0, -3], ends=[3, -1, 100], axes=[1, 2, 0])
    _check(make_model([node], _x((4, 4, 5)), ["y"], opset=7), rand(4, 4, 5, seed=17))


@pytest.mark.parametrize("opset", [7, 13])
def test_space_to_depth(opset):
    """(DepthToSpace in DCR mode, at every opset, is the fix-up `depth-to-space`: test_fixups.)"""
    node = N("SpaceToDepth", ["x"], ["y"], blocksize=2)
    _check(make_model([node], _x((2, 2, 4, 6)), ["y"], opset=opset), rand(2, 2, 4, 6, seed=18))


def test_nonzero_9():
    nodes = [N("Relu", ["x"], ["r"]), N("NonZero", ["r"], ["t"]), _to_float()]
    _check(make_model(nodes, _x((3, 4)), ["y"], opset=9), rand(3, 4, seed=16))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_20(approximate):
    model = make_model([N("Gelu", ["x"], ["y"], approximate=approximate)], _x((2, 8)), ["y"], opset=20)
    _check(model, rand(2, 8, seed=10) * 3)


@pytest.mark.parametrize("opset", [18, 21])
def test_group_normalization(opset):
    channels, groups = 6, 3
    n = groups if opset == 18 else channels
    inits = [init("s", rand(n, seed=1) + 1), init("b", rand(n, seed=2))]
    node = N("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=groups, epsilon=1e-4)
    model = make_model([node], _x((2, channels, 3, 4)), ["y"], inits, opset=opset)
    _check(model, rand(2, channels, 3, 4, seed=12))


@pytest.mark.parametrize("opset", [13, 22])
def test_global_max_pool(opset):
    model = make_model([N("GlobalMaxPool", ["x"], ["y"])], _x((2, 3, 4, 5)), ["y"], opset=opset)
    _check(model, rand(2, 3, 4, 5, seed=13))


def test_mapping_lists_data_and_runtime_inputs_only():
    from onnx2torch import convert

    model = make_model([N("ReduceMean", ["x", "a"], ["y"], keepdims=0)], _x((2, 3, 4)), ["y"],
                       [init("a", np.array([1]))], opset=18)
    module = convert(model, attach_onnx_mapping=True)
    reduce = [m for m in module.modules() if hasattr(m, "onnx_mapping")][0]
    assert reduce.onnx_mapping.inputs == ("x",) and reduce.onnx_mapping.outputs == ("y",)


def test_gradients_flow_through_new_converters():
    """Attribution needs d(output)/d(input) through these modules: compare with finite differences."""
    from onnx2torch import convert

    nodes = [
        N("Resize", ["x", "", "sc"], ["r"], mode="cubic"),
        N("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], dilations=[2, 2], pads=[0, 0, 1, 1]),
        N("ReduceMean", ["p", "a"], ["y"], keepdims=0),
    ]
    inits = [init("sc", np.array([1, 1, 2, 2], np.float32)), init("a", np.array([1, 2, 3]))]
    model = make_model(nodes, _x((1, 2, 4, 4)), ["y"], inits, opset=19)
    model, _ = fix_up(model, (1, 2, 4, 4))  # the asymmetric pads: Pad + AveragePool + count scale
    module = convert(model).double()
    x = torch.from_numpy(rand(1, 2, 4, 4, seed=14)).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: module(t), (x,))


# ------------------------------------------------------------------------------- check_convertible
def test_check_convertible_lists_ops_nodes_and_hints():
    nodes = [
        N("Conv", ["x", "w"], ["c"], name="conv1"),
        N("DequantizeLinear", ["c", "s"], ["d"], name="dq_act"),
        N("Transpose", ["d"], ["t"], name="to_seq", perm=[0, 2, 3, 1]),
        N("TFL_HARD_SWISH", ["t"], ["h"], name="tfl_hswish", domain="com.tflite"),
        N("LSTM", ["h", "W", "R"], ["y"], name="lstm_1", hidden_size=4),
    ]
    model = make_model(nodes, _x((1, 3, 4, 4)), ["y"], [init("w", rand(2, 3, 1, 1)), init("s", np.float32(0.1))], opset=17)
    model.opset_import.append(helper.make_opsetid("com.tflite", 1))
    with pytest.raises(OnnxAttrError) as err:
        check_convertible(model)
    message = str(err.value)
    assert "DequantizeLinear-13 (dq_act)" in message and "LSTM-14 (lstm_1)" in message
    assert "com.tflite.TFL_HARD_SWISH (tfl_hswish)" in message and "not an ONNX operator" in message
    assert "only where weights and scales are constant" in message
    assert "onnxattr nodes MODEL" in message
    assert "Conv" not in message.split(". ")[0].replace("ConvInteger", "")


def test_check_convertible_accepts_new_opsets():
    nodes = [N("Conv", ["x", "w"], ["c"]), N("Gelu", ["c"], ["g"]), N("ReduceMean", ["g", "a"], ["y"])]
    model = make_model(nodes, _x((1, 3, 4, 4)), ["y"], [init("w", rand(2, 3, 1, 1)), init("a", np.array([2, 3]))], opset=22)
    check_convertible(model)


# ------------------------------------------------------------------------ torch's default exporter
class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.gn = torch.nn.GroupNorm(2, 8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv1(x)))
        y = torch.nn.functional.max_pool2d(y, 2)
        y = torch.nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear")
        y = torch.nn.functional.gelu(self.gn(self.conv2(y)))
        y = torch.nn.functional.avg_pool2d(y, 2)
        a, b = torch.split(y, 4, dim=1)
        y = torch.cat([a * torch.sigmoid(b), torch.nn.functional.hardswish(b)], dim=1)
        return self.fc(torch.flatten(y.mean(dim=(2, 3), keepdim=True), 1))  # Reshape, allowzero=1


@pytest.mark.filterwarnings("ignore")
def test_dynamo_export_end_to_end(tmp_path):
    from onnxattr.onnxgraph.fixups import fix_up

    torch.manual_seed(0)
    net = _TinyNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 16, 16)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=True, external_data=True)
    model = onnx.load(str(path), load_external_data=True)
    assert model.opset_import[0].version >= 18
    check_convertible(model)
    fixed, notes = fix_up(model, tuple(x.shape))
    assert {"reshape", "batch"} <= {f.fixup for f in notes}
    xs = rand(3, 3, 16, 16, seed=15)
    expected = np.concatenate([run_ort(model, xs[i : i + 1])[0] for i in range(3)])
    assert_close(run_torch(fixed, xs)[0], expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert_close(net(torch.from_numpy(xs)).numpy(), expected, rtol=1e-4, atol=1e-5)
