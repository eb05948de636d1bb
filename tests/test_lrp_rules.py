"""Per-op LRP rules on tiny ONNX graphs, against relevance computed by hand (numpy formulas).

Every graph explains R̄ = mean(y), so the relevance entering at the output is R_j = y_j / N.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from onnxattr.attribution import attribute, get_method
from onnxattr.attribution import lrp as _lrp  # noqa: F401  (registers `lrp`)
from onnxattr.attribution.rule_table import PRESETS, build_table
from onnxattr.errors import OnnxAttrError
from onnxattr.onnxgraph.convert import to_torch

from .onnx_builders import init, make_model

RNG = np.random.default_rng(0)


def relevance(model: onnx.ModelProto, x: np.ndarray, **params) -> np.ndarray:
    """lrp's map alone; where its rules are backward rules, also shared with grad_input's forward
    (checked equal: bit for bit, up to rounding where a BatchNormalization is merged)."""
    graph = to_torch(model)
    method = get_method("lrp", **params)
    alone = attribute(graph, torch.from_numpy(x), [method])["lrp"]
    if method.backward_rules(graph) is not None:
        shared = attribute(graph, torch.from_numpy(x), [get_method("grad_input"), method])["lrp"]
        if any(n.op_type == "BatchNormalization" for n in model.graph.node):
            torch.testing.assert_close(shared, alone, rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(shared, alone)
    return alone.numpy().astype(np.float64)


def out_relevance(y: np.ndarray) -> np.ndarray:
    """R_j = y_j / N per image."""
    return y / y[0].size


def stab(z: np.ndarray, eps: float) -> np.ndarray:
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def pos(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0, None)


def neg(a: np.ndarray) -> np.ndarray:
    return np.clip(a, None, 0)


# --- linear ops: ε, z⁺, αβ, flat, w², z^B ------------------------------------------------------

X = RNG.normal(size=(3, 5)).astype(np.float32)  # mixed signs: all terms of z⁺/αβ exercised
W = RNG.normal(size=(4, 5)).astype(np.float32)
B = RNG.normal(size=4).astype(np.float32) * 0.1
LOW, HIGH = -3.0, 3.0


def dense_reference(rule: str, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Textbook LRP for y = x wᵀ + b, explaining mean(y)."""
    x, w, b = (a.astype(np.float64) for a in (x, w, b))
    y = x @ w.T + b
    r = out_relevance(y)
    if rule == "epsilon":
        return x * ((r / stab(y, 0.01)) @ w)
    if rule == "zplus":
        z = pos(x) @ pos(w).T + pos(b) + neg(x) @ neg(w).T
        s = r / stab(z, 1e-6)
        return pos(x) * (s @ pos(w)) + neg(x) * (s @ neg(w))
    if rule == "alpha_beta":
        zp = pos(x) @ pos(w).T + pos(b) + neg(x) @ neg(w).T
        zn = pos(x) @ neg(w).T + neg(b) + neg(x) @ pos(w).T
        sp, sn = r / stab(zp, 1e-6), r / stab(zn, 1e-6)
        rp = pos(x) * (sp @ pos(w)) + neg(x) * (sp @ neg(w))
        rn = pos(x) * (sn @ neg(w)) + neg(x) * (sn @ pos(w))
        return 2 * rp - rn
    if rule == "flat":
        ones = np.ones_like(w)
        return (r / stab(np.ones_like(x) @ ones.T, 1e-6)) @ ones
    if rule == "wsquare":
        return (r / stab(np.ones_like(x) @ (w * w).T + b * b, 1e-6)) @ (w * w)
    if rule == "zbox":
        lo, hi = np.full_like(x, LOW), np.full_like(x, HIGH)
        z = y - (lo @ pos(w).T + pos(b)) - (hi @ neg(w).T + neg(b))
        s = r / stab(z, 1e-6)
        return x * (s @ w) - lo * (s @ pos(w)) - hi * (s @ neg(w))
    raise AssertionError(rule)


RULE_SPECS = {
    "epsilon": {"rule": "epsilon", "epsilon": 0.01},
    "zplus": "zplus",
    "alpha_beta": {"rule": "alpha_beta", "alpha": 2.0, "beta": 1.0},
    "flat": "flat",
    "wsquare": "wsquare",
    "zbox": {"rule": "zbox", "low": LOW, "high": HIGH},
}


def gemm_model() -> onnx.ModelProto:
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    return make_model([node], [("x", [3, 5])], ["y"], [init("w", W), init("b", B)])


def matmul_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "wt"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    return make_model(
        nodes, [("x", [3, 5])], ["y"], [init("wt", W.T.copy()), init("b", np.zeros(4, np.float32))]
    )


@pytest.mark.parametrize("rule", list(RULE_SPECS))
def test_gemm_rules(rule: str) -> None:
    """The single Gemm is the first layer, so the `first` entry decides its rule."""
    got = relevance(gemm_model(), X, rules={"first": RULE_SPECS[rule]})
    np.testing.assert_allclose(got, dense_reference(rule, X, W, B), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("rule", ["epsilon", "zplus", "alpha_beta"])
def test_matmul_rules_after_first_layer(rule: str) -> None:
    """Gemm (first layer, ε) → Relu → MatMul: the MatMul's op-type entry applies."""
    chained = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("MatMul", ["a", "wt"], ["y"]),
    ]
    w1 = RNG.normal(size=(5, 5)).astype(np.float32)
    b1 = np.zeros(5, np.float32)
    model = make_model(
        chained, [("x", [3, 5])], ["y"], [init("w1", w1), init("b1", b1), init("wt", W.T.copy())]
    )
    got = relevance(
        model, X, rules={"MatMul": RULE_SPECS[rule], "first": {"rule": "epsilon", "epsilon": 1e-9}}
    )
    a = pos(X.astype(np.float64) @ w1.T.astype(np.float64))
    r_a = dense_reference(rule, a, W, np.zeros(4, np.float32))
    h = X.astype(np.float64) @ w1.T.astype(np.float64)
    expected = X * ((r_a / stab(h, 1e-9)) @ w1)  # ε-rule of the first Gemm (Relu passes R)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-7)


def test_matmul_plus_bias_is_epsilon_on_affine_map() -> None:
    """MatMul then Add(bias): ε on the MatMul and a proportional Add compose to ε on xWᵀ + b."""
    nodes = [
        helper.make_node("MatMul", ["x", "wt"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["h"]),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    model = make_model(nodes, [("x", [3, 5])], ["y"], [init("wt", W.T.copy()), init("b", B)])
    got = relevance(model, X, epsilon=1e-9, rules={"Add": {"rule": "norm", "epsilon": 1e-9}})
    y = X.astype(np.float64) @ W.T + B
    r = out_relevance(pos(y))
    np.testing.assert_allclose(got, X * ((r / y) @ W), rtol=1e-4, atol=1e-8)


def im2col_conv(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 'valid' convolution as patches (N·P, C·9) and weights (O, C·9)."""
    n, c, h, wd = x.shape
    patches = np.stack(
        [x[:, :, i : i + 3, j : j + 3].reshape(n, -1) for i in range(h - 2) for j in range(wd - 2)],
        1,
    )
    return patches.reshape(-1, c * 9), w.reshape(w.shape[0], -1)


@pytest.mark.parametrize("rule", ["epsilon", "zplus", "alpha_beta", "flat", "wsquare", "zbox"])
def test_conv_rules(rule: str) -> None:
    x = RNG.normal(size=(2, 2, 5, 5)).astype(np.float32)
    w = RNG.normal(size=(3, 2, 3, 3)).astype(np.float32)
    b = (RNG.normal(size=3) * 0.1).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3])
    model = make_model([node], [("x", [2, 2, 5, 5])], ["y"], [init("w", w), init("b", b)])
    got = relevance(model, x, rules={"first": RULE_SPECS[rule]})
    # reference: each output position is a dense layer on its patch; relevance of a patch is
    # scattered back and summed over positions. R_j = y_j/N with N = 3·3·3 outputs per image.
    p, wm = im2col_conv(x.astype(np.float64), w.astype(np.float64))
    y = (p @ wm.T + b).reshape(2, 9, 3)
    # dense_reference takes R = y/3 (its row size); the conv's N is 27
    r_p = dense_reference(rule, p, wm, b) * (3 / 27)
    expected = np.zeros((2, 2, 5, 5))
    r_p = r_p.reshape(2, 9, 2, 3, 3)
    for k, (i, j) in enumerate((i, j) for i in range(3) for j in range(3)):
        expected[:, :, i : i + 3, j : j + 3] += r_p[:, k]
    assert y.shape == (2, 9, 3)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-7)


def test_conv_transpose_epsilon() -> None:
    x = RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)
    w = RNG.normal(size=(3, 2, 3, 3)).astype(np.float32)  # (in, out, k, k)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2])
    model = make_model([node], [("x", [2, 3, 4, 4])], ["y"], [init("w", w)])
    got = relevance(model, x, rules={"first": {"rule": "epsilon", "epsilon": 0.01}})
    # by hand: y[o, 2i+a, 2j+b] += x[c, i, j] w[c, o, a, b]; R_x = x · Σ w · R/stab(y)
    xd, wd = x.astype(np.float64), w.astype(np.float64)
    y = np.zeros((2, 2, 9, 9))
    for i in range(4):
        for j in range(4):
            y[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] += np.einsum(
                "nc,cokl->nokl", xd[:, :, i, j], wd
            )
    s = out_relevance(y) / stab(y, 0.01)
    expected = np.zeros_like(xd)
    for i in range(4):
        for j in range(4):
            expected[:, :, i, j] = xd[:, :, i, j] * np.einsum(
                "nokl,cokl->nc", s[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3], wd
            )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-8)


# --- BatchNormalization -------------------------------------------------------------------------


def bn_inits(c: int) -> list[onnx.TensorProto]:
    return [
        init("g", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
        init("be", RNG.normal(size=c).astype(np.float32)),
        init("mu", RNG.normal(size=c).astype(np.float32)),
        init("var", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
    ]


def test_batchnorm_alone_gets_epsilon_on_affine_map() -> None:
    x = RNG.normal(size=(2, 3, 2, 2)).astype(np.float32)
    inits = bn_inits(3)
    g, be, mu, var = (
        onnx.numpy_helper.to_array(t).astype(np.float64).reshape(1, 3, 1, 1) for t in inits
    )
    node = helper.make_node(
        "BatchNormalization", ["x", "g", "be", "mu", "var"], ["y"], epsilon=1e-5
    )
    model = make_model([node], [("x", [2, 3, 2, 2])], ["y"], inits)
    got = relevance(model, x, epsilon=0.01)
    scale = g / np.sqrt(var + 1e-5)
    y = (x - mu) * scale + be
    np.testing.assert_allclose(got, x * scale * out_relevance(y) / stab(y, 0.01), rtol=1e-4)


@pytest.mark.parametrize("rule", ["epsilon", "zplus"])
def test_batchnorm_merged_into_conv(rule: str) -> None:
    """Conv→BN gets the Conv's rule on the merged affine map (z⁺ sees the merged weights' signs)."""
    x = np.abs(RNG.normal(size=(2, 2, 5, 5))).astype(np.float32)
    w = RNG.normal(size=(3, 2, 3, 3)).astype(np.float32)
    b = RNG.normal(size=3).astype(np.float32)
    inits = bn_inits(3)
    g, be, mu, var = (onnx.numpy_helper.to_array(t).astype(np.float64) for t in inits)
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Conv", ["a", "w", "b"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["y"], epsilon=1e-5),
    ]
    model = make_model(nodes, [("x", [2, 2, 5, 5])], ["y"], [init("w", w), init("b", b), *inits])
    got = relevance(model, x, rules={"first": RULE_SPECS[rule]})
    scale = g / np.sqrt(var + 1e-5)
    wm, bm = w * scale.reshape(3, 1, 1, 1), (b - mu) * scale + be
    p, wmat = im2col_conv(x.astype(np.float64), wm)
    r_p = (dense_reference(rule, p, wmat, bm) * (3 / 27)).reshape(2, 9, 2, 3, 3)
    expected = np.zeros((2, 2, 5, 5))
    for k, (i, j) in enumerate((i, j) for i in range(3) for j in range(3)):
        expected[:, :, i : i + 3, j : j + 3] += r_p[:, k]
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-7)


# --- sums, gates, activations, pooling, by-position ops ------------------------------------------


def test_add_and_sum_split_proportionally() -> None:
    x = RNG.normal(size=(2, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Sum", ["ab", "c", "a"], ["y"]),
    ]
    model = make_model(nodes, [("x", [2, 6])], ["y"], opset=17)
    got = relevance(model, x)
    xd = x.astype(np.float64)
    a, b, c = xd[:, :2], xd[:, 2:4], xd[:, 4:]
    y = a + b + c + a
    r = out_relevance(y) / stab(y, 1e-6)
    r_ab = (a + b) * r
    r_a = a * r + a * r_ab / stab(a + b, 1e-6)
    expected = np.concatenate([r_a, b * r_ab / stab(a + b, 1e-6), c * r], 1)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_mul_gate_takes_no_relevance() -> None:
    """Squeeze-excitation: x · sigmoid(pool(x)); all relevance stays on the x path."""
    x = RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["p"]),
        helper.make_node("Sigmoid", ["p"], ["s"]),
        helper.make_node("Mul", ["x", "s"], ["y"]),
    ]
    got = relevance(make_model(nodes, [("x", [2, 3, 4, 4])], ["y"]), x)
    s = 1 / (1 + np.exp(-x.astype(np.float64).mean((2, 3), keepdims=True)))
    y = x * s
    np.testing.assert_allclose(got, y * out_relevance(y) / stab(y, 1e-6), rtol=1e-4, atol=1e-9)


def test_swish_gate_and_uniform_fallback() -> None:
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    swish = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    got = relevance(make_model(swish, [("x", [2, 4])], ["y"]), x)
    y = x / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(got, y * out_relevance(y) / stab(y, 1e-6), rtol=1e-4)
    # a product of two activations with no recognisable gate: each factor gets half (uniform rule)
    prod = [
        helper.make_node("Split", ["x"], ["a", "b"], axis=1),
        helper.make_node("Mul", ["a", "b"], ["y"]),
    ]
    got = relevance(make_model(prod, [("x", [2, 4])], ["y"], opset=17), x)
    y = x[:, :2].astype(np.float64) * x[:, 2:]
    half = y * out_relevance(y) / stab(y, 1e-6) / 2
    np.testing.assert_allclose(got, np.concatenate([half, half], 1), rtol=1e-4)


ACTIVATION_NODES = {
    "Relu": ([], {}),
    "LeakyRelu": ([], {"alpha": 0.1}),
    "Elu": ([], {}),
    "Sigmoid": ([], {}),
    "Tanh": ([], {}),
    "HardSigmoid": ([], {}),
    "HardSwish": ([], {}),
    "PRelu": (["slope"], {}),
    "Clip": (["lo", "hi"], {}),
}


@pytest.mark.parametrize("op", list(ACTIVATION_NODES))
def test_activations_pass_relevance(op: str) -> None:
    """R_x = R_y = y/N: the activation neither creates nor absorbs relevance."""
    x = RNG.normal(size=(2, 3, 2, 2)).astype(np.float32)
    extra, attrs = ACTIVATION_NODES[op]
    inits = {
        "slope": init("slope", np.full((3, 1, 1), 0.2, np.float32)),
        "lo": init("lo", np.float32(-0.5)),
        "hi": init("hi", np.float32(0.7)),
    }
    node = helper.make_node(op, ["x", *extra], ["y"], **attrs)
    model = make_model([node], [("x", [2, 3, 2, 2])], ["y"], [inits[e] for e in extra], opset=14)
    import onnxruntime as ort

    (y,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(
        relevance(model, x), out_relevance(y.astype(np.float64)), rtol=1e-5, atol=1e-9
    )


def test_maxpool_winner_takes_all() -> None:
    x = RNG.normal(size=(2, 1, 4, 4)).astype(np.float32)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    got = relevance(make_model([node], [("x", [2, 1, 4, 4])], ["y"]), x)
    blocks = x.reshape(2, 1, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 1, 2, 2, 4)
    winner = blocks == blocks.max(-1, keepdims=True)
    y = blocks.max(-1).astype(np.float64)
    expected = (
        (winner * out_relevance(y)[..., None]).reshape(2, 1, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    )
    np.testing.assert_allclose(got, expected.reshape(x.shape), rtol=1e-5)


@pytest.mark.parametrize("op", ["AveragePool", "GlobalAveragePool", "ReduceMean"])
def test_average_pooling_is_normalised(op: str) -> None:
    x = RNG.uniform(0.1, 1, size=(2, 2, 4, 4)).astype(np.float32)
    attrs = {
        "AveragePool": {"kernel_shape": [4, 4]},
        "GlobalAveragePool": {},
        "ReduceMean": {"axes": [2, 3], "keepdims": 1},
    }[op]
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    got = relevance(make_model([node], [("x", [2, 2, 4, 4])], ["y"]), x)
    m = x.astype(np.float64).mean((2, 3), keepdims=True)
    np.testing.assert_allclose(got, x / 16 * out_relevance(m) / stab(m, 1e-6), rtol=1e-5)


def position_models() -> dict[str, tuple[onnx.ModelProto, callable]]:
    """(model on x of shape (2, 3, 4, 4), expected R_x as a function of x)."""
    s = (2, 3, 4, 4)
    n = 48

    def single(node, inits=(), opset=13):
        return make_model([node], [("x", s)], ["y"], list(inits), opset=opset)

    perm = lambda x: x / n  # noqa: E731  (outputs are a permutation of x)
    return {
        "Reshape": (
            single(
                helper.make_node("Reshape", ["x", "sh"], ["y"]), [init("sh", np.array([2, 48]))]
            ),
            perm,
        ),
        "Flatten": (single(helper.make_node("Flatten", ["x"], ["y"])), perm),
        "Transpose": (single(helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])), perm),
        "Unsqueeze": (
            single(helper.make_node("Unsqueeze", ["x", "ax"], ["y"]), [init("ax", np.array([1]))]),
            perm,
        ),
        "Squeeze": (
            make_model(
                [
                    helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
                    helper.make_node("Squeeze", ["u", "ax"], ["y"]),
                ],
                [("x", s)],
                ["y"],
                [init("ax", np.array([1]))],
            ),
            perm,
        ),
        "Pad": (
            single(
                helper.make_node("Pad", ["x", "p"], ["y"]),
                [init("p", np.array([0, 0, 1, 1, 0, 0, 1, 1]))],
            ),
            lambda x: x / (3 * 6 * 6),
        ),
        "Concat": (
            single(helper.make_node("Concat", ["x", "x"], ["y"], axis=1)),
            lambda x: 2 * x / (2 * n),
        ),
        "Slice": (
            single(
                helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"]),
                [init("st", np.array([1])), init("en", np.array([3])), init("ax", np.array([2]))],
            ),
            lambda x: x * np.isin(np.arange(4), [1, 2]).reshape(1, 1, 4, 1) / 24,
        ),
        "Split": (
            make_model(
                [
                    helper.make_node("Split", ["x"], ["a", "b"], axis=2),
                    helper.make_node("Relu", ["b"], ["y"]),
                ],
                [("x", s)],
                ["y"],
                opset=17,
            ),
            lambda x: np.concatenate([0 * x[:, :, :2], np.clip(x[:, :, 2:], 0, None)], 2) / 24,
        ),
        "Resize": (
            single(
                helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest"),
                [init("sc", np.array([1, 1, 2, 2], np.float32))],
            ),
            lambda x: 4 * x / (4 * n),
        ),
    }


@pytest.mark.parametrize("op", list(position_models()))
def test_by_position_ops(op: str) -> None:
    model, expected = position_models()[op]
    x = RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(
        relevance(model, x), expected(x.astype(np.float64)), rtol=1e-5, atol=1e-9
    )


def test_softmax_in_attention_is_constant() -> None:
    """y = softmax(x xᵀ) x: relevance reaches x only through the value path, attention fixed."""
    x = RNG.uniform(0.1, 1, size=(2, 3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "x"], ["y"]),
    ]
    got = relevance(make_model(nodes, [("x", [2, 3, 4])], ["y"]), x, epsilon=1e-9)
    xd = x.astype(np.float64)
    s = xd @ xd.transpose(0, 2, 1)
    a = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    y = a @ xd
    expected = xd * (a.transpose(0, 2, 1) @ (out_relevance(y) / stab(y, 1e-9)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


# --- first layer, input normalisation, table errors and overrides ---------------------------------


def test_input_normalisation_passes_and_parallel_first_layers() -> None:
    """(x − m)/s feeds two Convs: both are first layers (flat), the Sub/Div pass relevance."""
    x = RNG.uniform(0, 1, size=(1, 1, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Sub", ["x", "m"], ["c"]),
        helper.make_node("Div", ["c", "s"], ["n"]),
        helper.make_node("Conv", ["n", "w1"], ["y1"], kernel_shape=[3, 3]),
        helper.make_node("Conv", ["n", "w2"], ["y2"], kernel_shape=[3, 3]),
        helper.make_node("Add", ["y1", "y2"], ["y"]),
    ]
    w1 = np.full((1, 1, 3, 3), 0.5, np.float32)
    w2 = np.full((1, 1, 3, 3), 0.25, np.float32)
    inits = [
        init("m", np.float32(0.5)),
        init("s", np.float32(0.25)),
        init("w1", w1),
        init("w2", w2),
    ]
    model = make_model(nodes, [("x", [1, 1, 3, 3])], ["y"], inits)
    got = relevance(model, x, preset="epsilon_plus_flat")
    n = (x.astype(np.float64) - 0.5) / 0.25
    y1, y2 = (n * 0.5).sum(), (n * 0.25).sum()
    y = y1 + y2
    expected = np.full(
        x.shape, (y1 * y / stab(np.array(y), 1e-6) + y2 * y / stab(np.array(y), 1e-6)) / 9
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_op_without_rule_is_an_error_unless_default() -> None:
    x = RNG.uniform(0.1, 1, size=(2, 3)).astype(np.float32)
    nodes = [helper.make_node("Sin", ["x"], ["h"]), helper.make_node("Cos", ["h"], ["y"])]
    model = make_model(nodes, [("x", [2, 3])], ["y"])
    with pytest.raises(OnnxAttrError, match="no LRP rule for op type.*Cos, Sin"):
        relevance(model, x)
    got = relevance(model, x, rules={"default": "pass"})
    np.testing.assert_allclose(got, out_relevance(np.cos(np.sin(x.astype(np.float64)))), rtol=1e-5)


def test_overrides_from_toml_file(tmp_path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        'Conv = "zplus"\nGemm = { rule = "epsilon", epsilon = 0.25 }\nfirst = "wsquare"\n'
    )
    table = build_table("epsilon", overrides=str(path))
    assert repr(table.rules["Conv"]) == "zplus(stabilizer=1e-06)"
    assert table.rules["Gemm"].params["epsilon"] == 0.25
    assert table.first.name == "wsquare"
    assert build_table("epsilon").rules["Conv"].params["epsilon"] == PRESETS["epsilon"].epsilon
    got = relevance(gemm_model(), X, rules=str(path))
    np.testing.assert_allclose(got, dense_reference("wsquare", X, W, B), rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "nope"}, "unknown LRP preset 'nope'"),
        ({"rules": {"Conv": "zminus"}}, "entry 'Conv': unknown LRP rule 'zminus'"),
        (
            {"rules": {"Conv": {"rule": "alpha_beta", "alpha": 3.0, "beta": 1.0}}},
            "alpha - beta = 1",
        ),
        ({"rules": {"Conv": {"rule": "zplus", "gamma": 1}}}, "takes no parameter gamma"),
        ({"rules": "/nonexistent/rules.toml"}, "does not exist"),
    ],
)
def test_bad_tables_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(OnnxAttrError, match=message):
        get_method("lrp", **kwargs)


def test_weight_rule_on_op_without_weights_is_an_error() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [3, 5])], ["y"])
    with pytest.raises(OnnxAttrError, match="'zplus' needs a linear op.*not Relu"):
        relevance(model, X, rules={"Relu": "zplus"})


def test_gelu_as_erf_product_gates_the_erf_branch() -> None:
    """torch's GELU export x·(1 + erf(x/√2))·0.5: the erf factor is a gate, x takes R."""
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Div", ["x", "r2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["x", "e1"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
    ]
    inits = [
        init("r2", np.float32(np.sqrt(2))),
        init("one", np.float32(1)),
        init("half", np.float32(0.5)),
    ]
    got = relevance(make_model(nodes, [("x", [2, 4])], ["y"], inits), x)
    from scipy.special import erf

    m = x * (1 + erf(x.astype(np.float64) / np.sqrt(2)))
    np.testing.assert_allclose(got, m * out_relevance(0.5 * m) / stab(m, 1e-6), rtol=1e-4)


def test_rules_command_prints_table_and_presets(tmp_path) -> None:
    from typer.testing import CliRunner

    from onnxattr.cli import rules_cmds  # noqa: F401  (registers `rules`)
    from onnxattr.cli._app import app

    path = tmp_path / "o.toml"
    path.write_text('Conv = "alpha_beta"\n')
    result = CliRunner().invoke(
        app, ["rules", "--preset", "epsilon_plus_flat", "--overrides", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert "Conv *" in result.output and "alpha_beta(alpha=2.0" in result.output
    assert "epsilon_alpha2_beta1_flat" in result.output
    result = CliRunner().invoke(app, ["rules", "--preset", "nope"])
    assert result.exit_code == 1 and "unknown LRP preset 'nope'" in result.output


def test_shape_arithmetic_needs_no_rules() -> None:
    """Reshape to a shape computed from Shape/Gather/Concat (torch's dynamic-batch export): the
    shape ops are off the relevance path, so even a rule that would reject them is never applied."""
    x = RNG.normal(size=(2, 3, 2, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [init("zero", np.array(0)), init("ax", np.array([0])), init("minus1", np.array([-1]))]
    got = relevance(
        make_model(nodes, [("x", [2, 3, 2, 2])], ["y"], inits),
        x,
        rules={"Gather": "zplus", "Concat": "zplus"},
    )
    np.testing.assert_allclose(got, x / 12, rtol=1e-5)


def test_zbox_without_bounds_uses_each_images_extremes() -> None:
    got = relevance(gemm_model(), X, rules={"first": "zbox"})
    x, w, b = (a.astype(np.float64) for a in (X, W, B))
    lo = np.broadcast_to(x.min(1, keepdims=True), x.shape)
    hi = np.broadcast_to(x.max(1, keepdims=True), x.shape)
    y = x @ w.T + b
    z = y - (lo @ pos(w).T + pos(b)) - (hi @ neg(w).T + neg(b))
    s = out_relevance(y) / stab(z, 1e-6)
    expected = x * (s @ w) - lo * (s @ pos(w)) - hi * (s @ neg(w))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    alone = relevance(gemm_model(), X[:1].repeat(3, 0), rules={"first": "zbox"})
    np.testing.assert_allclose(alone[0], got[0], rtol=1e-5)


def test_decomposed_layer_norm_gives_relevance_to_the_centred_input() -> None:
    """(x − mean) / sqrt(mean((x − mean)²) + ε) as some exporters write LayerNorm: the divisor is
    a gate, so x receives R through the centring Sub (ε-normalised split with the mean)."""
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["c"]),
             helper.make_node("Pow", ["c", "two"], ["c2"]),
             helper.make_node("ReduceMean", ["c2"], ["v"], axes=[1], keepdims=1),
             helper.make_node("Add", ["v", "e"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["s"]),
             helper.make_node("Div", ["c", "s"], ["n"]), helper.make_node("Relu", ["n"], ["y"])]  # fmt: skip
    inits = [init("two", np.float32(2)), init("e", np.float32(1e-5))]
    got = relevance(make_model(nodes, [("x", [2, 4])], ["y"], inits), x)
    xd = x.astype(np.float64)
    m = xd.mean(1, keepdims=True)
    c = xd - m
    y = c / np.sqrt((c**2).mean(1, keepdims=True) + 1e-5)
    r_c = y * out_relevance(pos(y)) / stab(y, 1e-6)  # Relu passes; Div: c takes R, the gate s none
    r_sub = r_c / stab(c, 1e-6)
    r_m = (-m * r_sub).sum(1, keepdims=True)  # the mean's share of the split
    expected = xd * r_sub + xd / 4 * r_m / stab(m, 1e-6)  # ReduceMean: ε-normalised
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose", "Gemm"])
def test_batchnorm_merge_equals_folding_by_hand(op: str) -> None:
    """Relevance with linear op → BN equals relevance on the op with BN folded in numpy (grouped
    convolutions included); z⁺ follows the signs of the merged weights."""
    c_in, c_out = 4, 6
    x = np.abs(RNG.normal(size=(2, c_in, 4, 4) if op != "Gemm" else (2, c_in))).astype(np.float32)
    if op == "Conv":
        w = RNG.normal(size=(c_out, c_in // 2, 3, 3)).astype(np.float32)
        attrs, axis = {"kernel_shape": [3, 3], "group": 2}, 0
    elif op == "ConvTranspose":
        w = RNG.normal(size=(c_in, c_out // 2, 3, 3)).astype(np.float32)
        attrs, axis = {"kernel_shape": [3, 3], "group": 2}, 1
    else:
        w = RNG.normal(size=(c_out, c_in)).astype(np.float32)
        attrs, axis = {"transB": 1}, 0
    b = RNG.normal(size=c_out).astype(np.float32)
    inits = bn_inits(c_out)
    g, be, mu, var = (onnx.numpy_helper.to_array(t) for t in inits)
    scale = g / np.sqrt(var + 1e-5)
    if axis == 1:  # ConvTranspose (in, out/groups, k, k): output channel = group·(out/groups) + j
        wf = (
            w.reshape(2, c_in // 2, c_out // 2, 3, 3) * scale.reshape(2, 1, c_out // 2, 1, 1)
        ).reshape(w.shape)
    else:
        wf = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
    bf = (b - mu) * scale + be
    shape = list(x.shape)
    relu = helper.make_node("Relu", ["x"], ["a"])
    with_bn = make_model(
        [relu, helper.make_node(op, ["a", "w", "b"], ["c"], **attrs),
         helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["y"], epsilon=1e-5)],
        [("x", shape)], ["y"], [init("w", w), init("b", b), *inits],
    )  # fmt: skip
    folded = make_model(
        [relu, helper.make_node(op, ["a", "w", "b"], ["y"], **attrs)],
        [("x", shape)], ["y"], [init("w", wf.astype(np.float32)), init("b", bf.astype(np.float32))],
    )  # fmt: skip
    got = relevance(with_bn, x, rules={"first": "zplus"})
    np.testing.assert_allclose(
        got, relevance(folded, x, rules={"first": "zplus"}), rtol=1e-4, atol=1e-8
    )
