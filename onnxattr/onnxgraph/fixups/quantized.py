"""Pass 20, quantized: constant DequantizeLinear/QuantizeLinear folded, QDQ pairs on activations
reduced to their clamp, dynamic int8 and QLinear* ops with constant weights -> float ops."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...optypes import QDQ_LAYOUT
from ._registry import Fix, register_fixup
from .edits import (
    get_attr,
    plural,
    remove_dead,
    replace_uses,
    topo_sort,
)

_INT_RANGES = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint16): (0, 65535),
    np.dtype(np.int16): (-32768, 32767),
}


def _per_axis(param: np.ndarray, x: np.ndarray, axis: int, block_size: int) -> np.ndarray:
    """Broadcast a scale/zero point along `axis` of x (per-tensor, per-axis or blocked)."""
    if param.ndim == 0 or param.size == 1 and block_size == 0:
        return param.reshape(())
    axis = axis % x.ndim
    if block_size:
        return np.repeat(param, block_size, axis=axis).take(range(x.shape[axis]), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    return param.reshape(shape)


def _dequantize(node: onnx.NodeProto, vals: list[np.ndarray | None]) -> np.ndarray:
    x, scale = vals[0], vals[1]
    zp = vals[2] if len(vals) > 2 and vals[2] is not None else np.zeros((), x.dtype)
    axis, block = get_attr(node, "axis", 1), get_attr(node, "block_size", 0)
    xf = x.astype(np.float32) - _per_axis(zp, x, axis, block).astype(np.float32)
    return (xf * _per_axis(scale, x, axis, block).astype(np.float32)).astype(scale.dtype)


def _quantize(node: onnx.NodeProto, vals: list[np.ndarray | None]) -> np.ndarray | None:
    """QuantizeLinear on constants (None for 4-bit/float8 outputs, left to onnxruntime)."""
    x, scale = vals[0], vals[1]
    zp = vals[2] if len(vals) > 2 and vals[2] is not None else None
    out_dtype = zp.dtype if zp is not None else np.dtype(np.uint8)
    if get_attr(node, "output_dtype", 0):
        out_dtype = helper.tensor_dtype_to_np_dtype(get_attr(node, "output_dtype"))
    if out_dtype not in _INT_RANGES or get_attr(node, "block_size", 0):
        return None
    axis = get_attr(node, "axis", 1)
    lo, hi = _INT_RANGES[out_dtype]
    zpf = 0.0 if zp is None else _per_axis(zp, x, axis, 0).astype(np.float32)
    q = np.rint(x.astype(np.float32) / _per_axis(scale, x, axis, 0).astype(np.float32)) + zpf
    return np.clip(q, lo, hi).astype(out_dtype)


def _dynamic_int_pattern(
    graph: onnx.GraphProto, consts: dict[str, np.ndarray]
) -> list[tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto, str]]:
    """onnxruntime's dynamic quantization, DynamicQuantizeLinear(a) -> XInteger(a_q, W_q, a_zp, W_zp)
    -> Cast -> Mul(., Mul(a_scale, W_scale)) with a constant W: returns (integer op, final Mul whose
    output the float op takes over, DynamicQuantizeLinear, name of W_scale) per match."""
    producer = {o: n for n in graph.node for o in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    found = []
    for node in graph.node:
        if node.op_type not in ("MatMulInteger", "ConvInteger") or len(node.input) < 2:
            continue
        dql = producer.get(node.input[0])
        if dql is None or dql.op_type != "DynamicQuantizeLinear" or node.input[1] not in consts:
            continue
        if len(node.input) > 2 and node.input[2] and node.input[2] != dql.output[2]:
            continue
        cast = users.get(node.output[0], [])
        if len(cast) != 1 or cast[0].op_type != "Cast":
            continue
        mul = users.get(cast[0].output[0], [])
        if len(mul) != 1 or mul[0].op_type != "Mul":
            continue
        scale_name = [i for i in mul[0].input if i != cast[0].output[0]][0]
        scale_mul = producer.get(scale_name)
        if scale_mul is None or scale_mul.op_type != "Mul" or dql.output[1] not in scale_mul.input:
            continue
        w_scale = [i for i in scale_mul.input if i != dql.output[1]]
        if len(w_scale) != 1 or w_scale[0] not in consts:
            continue
        found.append((node, mul[0], dql, w_scale[0]))
    return found


def _saturation(
    graph: onnx.GraphProto, q: onnx.NodeProto, source: str, y: str, consts: dict[str, np.ndarray]
) -> list[onnx.NodeProto]:
    """What a Q -> DQ pair does besides rounding: clamp to the dequantized integer range. This is
    kept, as Clip(source) -> y, because quantizers fuse ReLU into it (zero point at qmin)."""
    vals = [consts.get(i) for i in q.input[1:3] if i]
    if len(vals) < 2 or any(v is None or v.size != 1 for v in vals) or vals[1].dtype not in _INT_RANGES:
        replace_uses(graph, y, source)  # range unknown or per channel: the pair becomes the identity
        return []
    scale, zp = (v.reshape(()) for v in vals)
    lo, hi = _INT_RANGES[zp.dtype]
    base = f"{y}/saturate"
    graph.initializer.extend(
        [
            numpy_helper.from_array(((lo - zp.astype(np.float32)) * scale).astype(scale.dtype), f"{base}/low"),
            numpy_helper.from_array(((hi - zp.astype(np.float32)) * scale).astype(scale.dtype), f"{base}/high"),
        ]
    )
    return [helper.make_node("Clip", [source, f"{base}/low", f"{base}/high"], [y], name=base)]


# ops that only move or select quantized values: they commute with (de)quantization


def _quantized_chain(
    producer: dict[str, onnx.NodeProto], users: dict[str, int], name: str
) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto]]:
    """The QuantizeLinear that `name` comes from through single-use layout ops, and those ops."""
    chain = []
    node = producer.get(name)
    while node is not None and node.op_type in QDQ_LAYOUT and users.get(node.output[0], 0) == 1:
        chain.append(node)
        node = producer.get(node.input[0])
    return (node if node is not None and node.op_type == "QuantizeLinear" else None), chain


def _qlinear_to_float(graph: onnx.GraphProto, consts: dict[str, np.ndarray]) -> int:
    """QLinearConv / QLinearMatMul with constant weights and scales (onnxruntime's QOperator format)
    -> DequantizeLinear, float Conv/MatMul, QuantizeLinear; the pair pass then removes the Q/DQ."""
    rewritten = 0
    nodes = []
    for node in graph.node:
        ins = list(node.input)
        conv = node.op_type == "QLinearConv"
        if node.op_type not in ("QLinearConv", "QLinearMatMul") or not all(
            i in consts for i in ins[1:] if i
        ):
            nodes.append(node)
            continue
        x_q, x_s, x_z, w_q, w_s, w_z, y_s, y_z = ins[:8]
        w = consts[w_q]
        axis = 0 if conv else -1  # per output channel
        scale = _per_axis(consts[w_s], w, axis, 0).astype(np.float32)
        w_f = (w.astype(np.float32) - _per_axis(consts[w_z], w, axis, 0).astype(np.float32)) * scale
        base = node.output[0]
        float_ins = [f"{base}/x", f"{base}/w"]
        graph.initializer.append(numpy_helper.from_array(w_f, f"{base}/w"))
        if conv and len(ins) > 8 and ins[8]:  # int32 bias in units of x_scale * w_scale
            bias = consts[ins[8]].astype(np.float32) * consts[x_s].astype(np.float32) * consts[w_s]
            graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), f"{base}/b"))
            float_ins.append(f"{base}/b")
        float_op = helper.make_node("Conv" if conv else "MatMul", float_ins, [f"{base}/y"], name=node.name or None)
        if conv:
            float_op.attribute.extend(node.attribute)
        nodes += [
            helper.make_node("DequantizeLinear", [x_q, x_s, x_z], [f"{base}/x"], name=f"{base}/dq"),
            float_op,
            helper.make_node("QuantizeLinear", [f"{base}/y", y_s, y_z], [base], name=f"{base}/q"),
        ]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten + _contrib_qlinear_to_float(graph, consts)


# onnxruntime's contrib QLinear ops (its QOperator quantizer writes them): float op, and where the
# (tensor, scale, zero point) triplets of the quantized inputs and of the output sit
_CONTRIB_QLINEAR = {
    "QLinearAdd": ("Add", [0, 3], 6),
    "QLinearMul": ("Mul", [0, 3], 6),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", [0], 3),
    "QLinearAveragePool": ("AveragePool", [0], 3),
    "QLinearSigmoid": ("Sigmoid", [0], 3),
    "QLinearLeakyRelu": ("LeakyRelu", [0], 3),
    "QGemm": ("Gemm", [0, 3], 7),
}


def _contrib_qlinear_to_float(graph: onnx.GraphProto, consts: dict[str, np.ndarray]) -> int:
    """com.microsoft QLinear* -> DequantizeLinear per quantized input, the float op, QuantizeLinear
    (constant inputs are folded and Q -> DQ pairs removed afterwards)."""
    rewritten, nodes = 0, []
    for node in graph.node:
        spec = _CONTRIB_QLINEAR.get(node.op_type) if node.domain == "com.microsoft" else None
        ins = list(node.input)
        if spec is None or get_attr(node, "channels_last", 0) or not all(
            i in consts for k in spec[1] for i in ins[k + 1 : k + 3] if i
        ):
            nodes.append(node)
            continue
        op, quantized, out = spec
        base = node.output[0]
        float_ins = []
        for k in quantized:
            dq = helper.make_node("DequantizeLinear", ins[k : k + 3], [f"{base}/in{k}"], name=f"{base}/dq{k}")
            if op == "Gemm" and k == 3 and consts[ins[k + 1]].size > 1:  # B per output column
                dq.attribute.append(helper.make_attribute("axis", 0 if get_attr(node, "transB", 0) else 1))
            nodes.append(dq)
            float_ins.append(f"{base}/in{k}")
        if op == "Gemm" and len(ins) > 6 and ins[6]:  # int32 bias in units of a_scale * b_scale
            bias = consts[ins[6]].astype(np.float32) * consts[ins[1]].astype(np.float32) * consts[ins[4]]
            graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), f"{base}/c"))
            consts[f"{base}/c"] = bias
            float_ins.append(f"{base}/c")
        quantize_out = len(ins) > out and ins[out]
        float_out = f"{base}/y" if quantize_out else base
        float_op = helper.make_node(op, float_ins, [float_out], name=node.name or None)
        float_op.attribute.extend(a for a in node.attribute if a.name != "channels_last")
        nodes.append(float_op)
        if quantize_out:
            nodes.append(
                helper.make_node("QuantizeLinear", [float_out, *ins[out : out + 2]], [base], name=f"{base}/q")
            )
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten


@register_fixup("quantized", order=20,
                description="quantized ops with constant weights -> float ops")
def _fold_quantized(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    g = model.graph
    quantized_ops = {"DequantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"}
    quantized_ops |= set(_CONTRIB_QLINEAR)
    if not any(n.op_type in quantized_ops for n in g.node):
        return []
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    counts = {"dq": 0, "pairs": 0, "dyn": 0, "qlinear": _qlinear_to_float(g, consts)}

    # Dynamic int8: W_float = (W_q - W_zp) * W_scale; the activation quantization is dropped.
    for op, mul, dql, w_scale_name in _dynamic_int_pattern(g, consts):
        w_q = consts[op.input[1]]
        w_zp = consts.get(op.input[3]) if len(op.input) > 3 and op.input[3] else np.zeros((), w_q.dtype)
        w_scale = consts[w_scale_name]
        axis = 0 if op.op_type == "ConvInteger" else -1  # per-channel: output channels
        zp_b = _per_axis(np.asarray(w_zp), w_q, axis, 0)
        w = (w_q.astype(np.float32) - zp_b.astype(np.float32)) * _per_axis(w_scale, w_q, axis, 0)
        w_name = f"{op.input[1]}/dequantized"
        g.initializer.append(numpy_helper.from_array(w.astype(np.float32), w_name))
        float_op = "MatMul" if op.op_type == "MatMulInteger" else "Conv"
        new = helper.make_node(float_op, [dql.input[0], w_name], [mul.output[0]], name=op.name or None)
        new.attribute.extend(op.attribute)
        del mul.output[:]
        mul.output.append(f"{new.output[0]}/replaced")
        g.node.append(new)
        counts["dyn"] += 1
    topo_sort(g)

    # Constant QuantizeLinear / DequantizeLinear -> values; Q -> DQ pairs on activations -> bypass.
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    folded: dict[str, np.ndarray] = {}
    retyped: set[str] = set()
    keep = []
    for node in g.node:
        vals = [consts.get(i) if i else None for i in node.input]
        all_const = all(v is not None for v, i in zip(vals, node.input) if i)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and all_const:
            value = (_dequantize if node.op_type == "DequantizeLinear" else _quantize)(node, vals)
            if value is not None:
                consts[node.output[0]] = folded[node.output[0]] = value
                counts["dq"] += node.op_type == "DequantizeLinear"
                continue
        if node.op_type == "DequantizeLinear":
            q, chain = _quantized_chain(producer, users, node.input[0])
            if q is not None and q.input[0] not in consts:
                # layout ops between Q and DQ now move the float tensor; the clamp follows them
                source = chain[0].output[0] if chain else q.input[0]
                if chain:
                    chain[-1].input[0] = q.input[0]
                    retyped.update(n.output[0] for n in chain)
                keep.extend(_saturation(g, q, source, node.output[0], consts))
                counts["pairs"] += 1
                continue
        keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    infos = [v for v in g.value_info if v.name not in retyped]  # now float, were int8
    del g.value_info[:]
    g.value_info.extend(infos)
    read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for name, value in folded.items():
        if name in read:
            g.initializer.append(numpy_helper.from_array(value, name))
    remove_dead(g)
    messages = {
        "dq": ("dequantize-weights",
               f"{plural(counts['dq'], 'DequantizeLinear weight')} folded to float"),
        "pairs": ("qdq-pairs", f"{plural(counts['pairs'], 'QuantizeLinear/DequantizeLinear pair')}"
                               " -> saturation (Clip) only"),
        "qlinear": ("qlinear-ops", f"{counts['qlinear']} QLinear* ops (QOperator format) -> float ops"),
        "dyn": ("dynamic-int8", f"{counts['dyn']} dynamic int8 MatMulInteger/ConvInteger -> float "
                                "MatMul/Conv"),
    }
    return [Fix(code, counts[k], msg) for k, (code, msg) in messages.items() if counts[k]]
