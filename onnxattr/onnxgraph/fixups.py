"""Fix-up passes that make real exported ONNX graphs convertible by onnx2torch.

Each pass looks for one problem seen in real exports, changes the graph only where it finds it,
and returns what it changed as :class:`Fix` records (a stable ``code``, a ``count``, a message for
people, and details); :func:`fix_up` runs the registered passes in their declared ``order``:

10 constant-weights  Constant nodes -> initializers, nodes computed from constants only folded
                     (onnx2torch reads weights from initializers only).
20 quantized         constant DequantizeLinear/QuantizeLinear folded, QDQ pairs on activations reduced
                     to their clamp, dynamic int8 MatMulInteger/ConvInteger and QLinearConv/MatMul
                     (constant weights) turned back into float Conv/MatMul.
30 explicit-pads     auto_pad=SAME_*/VALID -> explicit pads for the static input size; asymmetric
                     ConvTranspose pads -> symmetric pads + Slice, asymmetric AveragePool pads ->
                     Pad + AveragePool (+ count correction) (onnx2torch rejects all three).
40 reshape           allowzero=1 -> 0 where the shape has no 0 (same result; onnx2torch rejects 1).
45 depth-to-space    DepthToSpace in DCR mode -> Reshape/Transpose/Reshape (onnx2torch: CRD only).
50 batch             batch size baked into Reshape shape constants -> 0 ("copy the input's dim"),
                     batch-1 constants concatenated to batched tensors -> Expand, a static batch dim
                     on the graph input relaxed; verified on onnxruntime at batch 2, else reverted
                     (code ``single-image``: the pipeline then attributes one image at a time).
60 shapes            tensors without a rank after ONNX shape inference get value_info (shape inference
                     with data propagation, then onnxruntime on a dummy input).

A new pass is one decorated function, placed by its order among these::

    @register_fixup("my-pass", order=35, description="what it rewrites and why")
    def my_pass(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
        ...  # mutate model in place where needed
        return [Fix("my-code", n, f"{n} nodes rewritten")] if n else []
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxAttrError
from ..optypes import PADDED, QDQ_LAYOUT
from .graph import real_inputs, run_tensors, static_shape, tensor_session

_BATCH_PARAM = "batch"

#: The code of a graph that only runs one image at a time; the pipeline then uses batch size 1.
SINGLE_IMAGE = "single-image"


@dataclass(frozen=True)
class Fix:
    """One kind of change a fix-up pass made: ``code`` is stable (tests and code match it),
    ``count`` says how many places, ``message`` says it in words, ``detail`` holds the specifics."""

    code: str
    count: int
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    fixup: str = ""  # the pass that made it (set by fix_up)

    def __str__(self) -> str:
        return f"{self.fixup}: {self.message}" if self.fixup else self.message

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "detail": dict(self.detail)}


FixupFn = Callable[[onnx.ModelProto, "list[int] | None"], "list[Fix]"]


@dataclass(frozen=True)
class FixupPass:
    """A registered pass: it mutates the model where needed and returns what it changed."""

    name: str
    order: float
    description: str
    fn: FixupFn


#: Every registered pass by name; :func:`fix_up` runs them sorted by ``order``.
FIXUPS: dict[str, FixupPass] = {}


def register_fixup(name: str, *, order: float, description: str) -> Callable[[FixupFn], FixupFn]:
    """Decorator: run ``fn(model, dims)`` in :func:`fix_up` at position ``order`` (see above)."""

    def decorate(fn: FixupFn) -> FixupFn:
        FIXUPS[name] = FixupPass(name, order, description, fn)
        return fn

    return decorate


def list_fixups() -> list[FixupPass]:
    """The registered passes in the order :func:`fix_up` runs them."""
    return sorted(FIXUPS.values(), key=lambda p: p.order)


def fix_up(
    model: onnx.ModelProto, input_shape: Sequence[int] | None = None
) -> tuple[onnx.ModelProto, list[Fix]]:
    """Apply each fix-up pass only where needed; return the fixed model and what was changed.
    input_shape is the full static input shape (N, C, H, W or N, H, W, C) the model will be run
    with (batch may be any int > 0)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = _input_dims(fixed, input_shape)
    fixes: list[Fix] = []
    for p in list_fixups():
        fixes += [replace(f, fixup=p.name) for f in p.fn(fixed, dims)]
        _list_initializers_as_inputs(fixed)
    return fixed, fixes


def _list_initializers_as_inputs(model: onnx.ModelProto) -> None:
    """IR 3 requires every initializer to be a graph input too (passes add initializers)."""
    if model.ir_version >= 4:
        return
    listed = {v.name for v in model.graph.input}
    model.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in model.graph.initializer
        if t.name not in listed
    )


# --------------------------------------------------------------------------------------------- helpers
def _input_dims(model: onnx.ModelProto, input_shape: Sequence[int] | None) -> list[int] | None:
    """Static shape of the first graph input: the given one, else the declared one if fully static."""
    inputs = real_inputs(model.graph)
    if not inputs:
        return None
    declared = inputs[0].type.tensor_type.shape.dim
    if input_shape is not None:
        if len(input_shape) != len(declared) and len(declared) > 0:
            raise OnnxAttrError(
                f"input shape {tuple(input_shape)} has rank {len(input_shape)} but the model input "
                f"'{inputs[0].name}' has rank {len(declared)}; give a shape of rank {len(declared)}"
            )
        return [int(d) for d in input_shape]
    if declared and all(d.HasField("dim_value") and d.dim_value > 0 for d in declared):
        return [d.dim_value for d in declared]
    return None


def _set_dims(value_info: onnx.ValueInfoProto, dims: Sequence[int | str | None]) -> None:
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        elif d is not None:
            dim.dim_value = d


def _with_input_dims(model: onnx.ModelProto, dims: Sequence[int | str]) -> onnx.ModelProto:
    """A copy whose first input has the given dims (the others keep theirs)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _set_dims(real_inputs(copy.graph)[0], dims)
    return copy


def _infer(model: onnx.ModelProto, data_prop: bool) -> onnx.ModelProto | None:
    try:
        return onnx.shape_inference.infer_shapes(
            _skeleton(model), strict_mode=False, data_prop=data_prop
        )
    except Exception:  # inference rejects some real graphs outright; callers fall back to onnxruntime
        return None


def _skeleton(model: onnx.ModelProto, max_elements: int = 4096) -> onnx.ModelProto:
    """The model with large initializers replaced by typed graph inputs: shape inference needs only
    their shapes (values only of small shape-like tensors), and serializing weights dominates its cost
    on big models."""
    big = [t for t in model.graph.initializer if np.prod(t.dims, dtype=np.int64) > max_elements]
    if not big:
        return model
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    names = {t.name for t in big}
    small = [t for t in skeleton.graph.initializer if t.name not in names]
    del skeleton.graph.initializer[:]
    skeleton.graph.initializer.extend(small)
    listed = {v.name for v in skeleton.graph.input}
    skeleton.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big if t.name not in listed
    )
    return skeleton


def _ranked(model: onnx.ModelProto | None) -> dict[str, onnx.ValueInfoProto]:
    """value_info (incl. inputs/outputs) of tensors whose rank is known."""
    if model is None:
        return {}
    g = model.graph
    infos = list(g.value_info) + list(g.input) + list(g.output)
    return {
        v.name: v
        for v in infos
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
    }


def _feeds(model: onnx.ModelProto, dims: Sequence[int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs: the first input gets `dims`, the others their declared static shape."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, vi in enumerate(real_inputs(model.graph)):
        shape = list(dims) if i == 0 else static_shape(vi)
        if any(d is None for d in shape):
            raise OnnxAttrError(
                f"model input '{vi.name}' has no static shape; onnxattr needs every extra input static"
            )
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _static_shapes(
    model: onnx.ModelProto, dims: Sequence[int], names: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    """Static shapes of the named tensors for input dims `dims`: ONNX inference, else onnxruntime."""
    names = set(names)
    known = _ranked(_infer(_with_input_dims(model, dims), data_prop=True))
    shapes = {}
    for n in names:
        d = static_shape(known[n]) if n in known else None
        if d and None not in d:
            shapes[n] = tuple(int(x) for x in d)
    missing = names - set(shapes) - {t.name for t in model.graph.initializer}
    if missing:
        values = run_tensors(model, _feeds(model, dims), sorted(missing))
        shapes.update({n: tuple(v.shape) for n, v in values.items()})
    for t in model.graph.initializer:
        if t.name in names:
            shapes[t.name] = tuple(t.dims)
    return shapes


def _replace_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every consumer of `old` read `new`; a graph output keeps its name via an Identity."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    if any(o.name == old for o in graph.output):
        graph.node.append(helper.make_node("Identity", [new], [old], name=f"{old}/identity"))


def _remove_dead(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers nothing reads (keeps the topological order of the rest)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [t for t in graph.initializer if t.name in needed]
    old_inits = _all_inits(graph)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    kept = _all_inits(graph)
    inputs = [v for v in graph.input if v.name not in old_inits or v.name in kept]
    del graph.input[:]
    graph.input.extend(inputs)


def _all_inits(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer}


def _topo_sort(graph: onnx.GraphProto) -> None:
    """Restore topological order after inserting nodes (onnx2torch relies on it)."""
    available = {v.name for v in graph.input} | _all_inits(graph) | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # inputs from outside (e.g. outer scope): keep order as is
            ordered.extend(rest)
            break
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    _del_attr(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def _del_attr(node: onnx.NodeProto, name: str) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ------------------------------------------------------------------------------ 1. constant weights
def _constant_tensor(node: onnx.NodeProto) -> TensorProto | None:
    """The value of a Constant node as a tensor named like its output (None for sparse/string)."""
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None:
        return None
    name = node.output[0]
    if attr.name == "value":
        tensor = TensorProto()
        tensor.CopyFrom(attr.t)
        tensor.name = name
        return tensor
    dtypes = {
        "value_float": np.float32,
        "value_floats": np.float32,
        "value_int": np.int64,
        "value_ints": np.int64,
    }
    if attr.name not in dtypes:
        return None
    dtype = dtypes[attr.name]
    return numpy_helper.from_array(np.array(helper.get_attribute_value(attr), dtype=dtype), name)


@register_fixup("constant-weights", order=10,
                description="Constant nodes -> initializers; nodes on constants only folded")
def _constant_weights(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    g = model.graph
    outputs = {o.name for o in g.output}
    keep, moved = [], 0
    for node in g.node:
        tensor = None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output[0] not in outputs:
            tensor = _constant_tensor(node)
        if tensor is None:
            keep.append(node)
            continue
        g.initializer.append(tensor)
        moved += 1
    if moved:
        del g.node[:]
        g.node.extend(keep)
    folded = _fold_constant_nodes(model)
    fixes = [Fix("constant-nodes", moved, f"{_plural(moved, 'Constant node')} -> initializers")
             ] if moved else []
    if folded:
        kinds = ", ".join(f"{op} x{n}" for op, n in sorted(folded.items()))
        n = sum(folded.values())
        fixes.append(Fix("constant-folded", n,
                         f"{_plural(n, 'node')} on constants only folded ({kinds})",
                         {"ops": dict(sorted(folded.items()))}))
    return fixes


# Not folded here: the quantized pass reports Q/DQ, random ops differ per run.
_NO_FOLD = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Constant", "RandomNormal",
    "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
}


def _fold_constant_nodes(model: onnx.ModelProto) -> dict[str, int]:
    """Replace nodes whose inputs are all initializers by their values: exporters route weights
    through Identity (torch's legacy exporter dedupes equal tensors so), Cast, Transpose or Mul, and
    onnx2torch reads weights from initializers only. Evaluated with onnx's reference runtime."""
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    folded: dict[str, int] = {}
    keep = []
    for node in g.node:
        inputs = [i for i in node.input if i]
        foldable = (
            inputs
            and all(i in inits for i in inputs)
            and node.domain in ("", "ai.onnx")
            and node.op_type not in _NO_FOLD
            and not outputs & set(node.output)
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        )
        if not foldable:
            keep.append(node)
            continue
        sub = helper.make_model(
            helper.make_graph(
                [node], "fold",
                [helper.make_tensor_value_info(i, inits[i].data_type, inits[i].dims) for i in inputs],
                [onnx.ValueInfoProto(name=o) for o in node.output if o],
            ),
            opset_imports=model.opset_import,
        )
        try:
            values = ReferenceEvaluator(sub).run(None, {i: numpy_helper.to_array(inits[i]) for i in inputs})
        except Exception:  # leave what the reference runtime cannot evaluate to onnx2torch
            keep.append(node)
            continue
        for name, value in zip([o for o in node.output if o], values):
            inits[name] = numpy_helper.from_array(np.asarray(value), name)
            g.initializer.append(inits[name])
        folded[node.op_type] = folded.get(node.op_type, 0) + 1
    if folded:
        del g.node[:]
        g.node.extend(keep)
        _remove_dead(g)
    return folded


# ------------------------------------------------------------------------------------ 2. quantized
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
    axis, block = _attr(node, "axis", 1), _attr(node, "block_size", 0)
    xf = x.astype(np.float32) - _per_axis(zp, x, axis, block).astype(np.float32)
    return (xf * _per_axis(scale, x, axis, block).astype(np.float32)).astype(scale.dtype)


def _quantize(node: onnx.NodeProto, vals: list[np.ndarray | None]) -> np.ndarray | None:
    """QuantizeLinear on constants (None for 4-bit/float8 outputs, left to onnxruntime)."""
    x, scale = vals[0], vals[1]
    zp = vals[2] if len(vals) > 2 and vals[2] is not None else None
    out_dtype = zp.dtype if zp is not None else np.dtype(np.uint8)
    if _attr(node, "output_dtype", 0):
        out_dtype = helper.tensor_dtype_to_np_dtype(_attr(node, "output_dtype"))
    if out_dtype not in _INT_RANGES or _attr(node, "block_size", 0):
        return None
    axis = _attr(node, "axis", 1)
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
        _replace_uses(graph, y, source)  # range unknown or per channel: the pair becomes the identity
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
        if spec is None or _attr(node, "channels_last", 0) or not all(
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
                dq.attribute.append(helper.make_attribute("axis", 0 if _attr(node, "transB", 0) else 1))
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
    _topo_sort(g)

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
    _remove_dead(g)
    messages = {
        "dq": ("dequantize-weights",
               f"{_plural(counts['dq'], 'DequantizeLinear weight')} folded to float"),
        "pairs": ("qdq-pairs", f"{_plural(counts['pairs'], 'QuantizeLinear/DequantizeLinear pair')}"
                               " -> saturation (Clip) only"),
        "qlinear": ("qlinear-ops", f"{counts['qlinear']} QLinear* ops (QOperator format) -> float ops"),
        "dyn": ("dynamic-int8", f"{counts['dyn']} dynamic int8 MatMulInteger/ConvInteger -> float "
                                "MatMul/Conv"),
    }
    return [Fix(code, counts[k], msg) for k, (code, msg) in messages.items() if counts[k]]


# --------------------------------------------------------------------------------- 3. explicit pads


def _kernel(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> list[int]:
    kernel = _attr(node, "kernel_shape")
    if kernel is not None:
        return list(kernel)
    return list(shapes[node.input[1]][2:])


def _same_pads(node: onnx.NodeProto, in_sizes: Sequence[int], kernel: Sequence[int]) -> list[int]:
    """Explicit pads [b1, b2, ..., e1, e2, ...] equivalent to auto_pad on this input size."""
    rank = len(kernel)
    strides = _attr(node, "strides", [1] * rank)
    dilations = _attr(node, "dilations", [1] * rank)
    mode = _attr(node, "auto_pad").decode()
    if mode == "VALID":
        return [0] * 2 * rank
    begins, ends = [], []
    for i in range(rank):
        effective = (kernel[i] - 1) * dilations[i] + 1
        if node.op_type == "ConvTranspose":
            out_padding = _attr(node, "output_padding", [0] * rank)[i]
            out = _attr(node, "output_shape", None)
            target = out[-rank + i] if out else in_sizes[i] * strides[i]
            total = max(0, strides[i] * (in_sizes[i] - 1) + out_padding + effective - target)
        else:
            out = -(-in_sizes[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + effective - in_sizes[i])
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends


def _split_transpose_pads(graph: onnx.GraphProto, node: onnx.NodeProto, pads: list[int]) -> None:
    """ConvTranspose pads crop its output, so asymmetric pads = symmetric pads + Slice of the rest."""
    rank = len(pads) // 2
    sym = [min(pads[i], pads[rank + i]) for i in range(rank)]
    _set_attr(node, "pads", sym + sym)
    starts = [pads[i] - sym[i] for i in range(rank)]
    ends = [-(pads[rank + i] - sym[i]) or np.iinfo(np.int64).max for i in range(rank)]
    out, cropped = node.output[0], f"{node.output[0]}/uncropped"
    node.output[0] = cropped
    base = f"{node.name or out}/crop"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(starts, np.int64), f"{base}/starts"),
            numpy_helper.from_array(np.array(ends, np.int64), f"{base}/ends"),
            numpy_helper.from_array(np.arange(2, 2 + rank, dtype=np.int64), f"{base}/axes"),
        ]
    )
    graph.node.append(
        helper.make_node(
            "Slice", [cropped, f"{base}/starts", f"{base}/ends", f"{base}/axes"], [out], name=base
        )
    )


@register_fixup("explicit-pads", order=30,
                description="auto_pad and asymmetric ConvTranspose/AveragePool pads -> explicit")
def _explicit_pads(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    g = model.graph
    auto = [
        n
        for n in g.node
        if n.op_type in PADDED and _attr(n, "auto_pad", b"NOTSET") not in (b"NOTSET", b"")
    ]
    transposed = [
        n
        for n in g.node
        if n.op_type == "ConvTranspose" and n not in auto and _asymmetric(_attr(n, "pads", []))
    ]
    # onnx2torch's AveragePool before 19 rejects asymmetric pads; this rewrite is the one path for
    # them at every opset (the converters' AveragePool-19/22 leaves them to it)
    pooled = [n for n in g.node if n not in auto and _asymmetric_average_pool(n)]
    if dims is None:
        pooled = []  # the count correction needs the static size: left to onnx2torch's error
    if not auto and not transposed and not pooled:
        return []
    if auto and dims is None:
        names = ", ".join(n.name or n.op_type for n in auto[:3])
        raise OnnxAttrError(
            f"nodes {names} use auto_pad, which needs the static input size; give the input shape"
        )
    wanted = [n.input[0] for n in auto + pooled]
    wanted += [n.input[1] for n in auto if n.op_type.startswith("Conv")]
    try:
        shapes = _static_shapes(model, dims, wanted) if wanted else {}
        sizes = {n.input[0]: shapes[n.input[0]][2:] for n in auto + pooled}
    except Exception as err:  # neither shape inference nor onnxruntime could size these inputs
        names = ", ".join(n.name or n.op_type for n in auto[:3])
        raise OnnxAttrError(
            f"cannot size the inputs of {names} (auto_pad) for input {tuple(dims)}: {err}; "
            "check the input shape"
        ) from err
    modes = sorted({_attr(n, "auto_pad").decode() for n in auto})
    for node in auto:
        kernel = _kernel(node, shapes)
        pads = _same_pads(node, sizes[node.input[0]], kernel)
        _del_attr(node, "auto_pad")
        _set_attr(node, "pads", pads)
        if node.op_type == "ConvTranspose":
            _del_attr(node, "output_shape")
            if _asymmetric(pads):
                transposed.append(node)
        if _asymmetric_average_pool(node):
            pooled.append(node)
    for node in transposed:
        _split_transpose_pads(g, node, list(_attr(node, "pads")))
    for node in pooled:
        _split_average_pool_pads(model, node, sizes[node.input[0]])
    _topo_sort(g)
    fixes = []
    if auto:
        size = "x".join(map(str, dims))
        fixes.append(Fix(
            "auto-pad", len(auto),
            f"{_plural(len(auto), 'node')} auto_pad={'/'.join(modes)} -> explicit pads for input {size}",
            {"modes": modes, "input_shape": list(dims)}))
    if transposed:
        fixes.append(Fix(
            "asymmetric-conv-transpose", len(transposed),
            f"{_plural(len(transposed), 'asymmetric ConvTranspose')} -> symmetric pads + Slice"))
    if pooled:
        fixes.append(Fix(
            "asymmetric-average-pool", len(pooled),
            f"{_plural(len(pooled), 'asymmetric AveragePool')} -> Pad + AveragePool"
            " (x window-size/count where pads are not counted)"))
    return fixes


def _asymmetric_average_pool(node: onnx.NodeProto) -> bool:
    return (
        node.op_type == "AveragePool"
        and not _attr(node, "ceil_mode", 0)
        and _asymmetric(_attr(node, "pads", []))
    )


def _split_average_pool_pads(model: onnx.ModelProto, node: onnx.NodeProto, sizes: Sequence[int]):
    """Asymmetric pads -> an explicit zero Pad before an unpadded AveragePool that counts every
    window element; with count_include_pad=0 the output is rescaled by kernel size / elements
    inside the input, a constant map for the static input size."""
    g = model.graph
    pads = list(_attr(node, "pads"))
    rank = len(pads) // 2
    kernel, strides = list(_attr(node, "kernel_shape")), list(_attr(node, "strides", [1] * rank))
    dilations = list(_attr(node, "dilations", [1] * rank))  # AveragePool-19+
    x, y = node.input[0], node.output[0]
    base = f"{node.name or y}/pad"
    full = [0, 0] + pads[:rank] + [0, 0] + pads[rank:]
    if _opset(model) >= 11:
        g.initializer.append(numpy_helper.from_array(np.array(full, np.int64), f"{base}/pads"))
        g.node.append(helper.make_node("Pad", [x, f"{base}/pads"], [base], name=base))
    else:
        g.node.append(helper.make_node("Pad", [x], [base], name=base, pads=full))
    node.input[0] = base
    include = _attr(node, "count_include_pad", 0)
    _set_attr(node, "pads", [0] * 2 * rank)
    _set_attr(node, "count_include_pad", 1)
    if include:
        return
    inside = np.pad(np.ones(sizes), list(zip(pads[:rank], pads[rank:])))
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = np.lib.stride_tricks.sliding_window_view(inside, extent)
    windows = windows[tuple(slice(None, None, s) for s in strides)]
    windows = windows[(Ellipsis, *(slice(None, None, d) for d in dilations))]
    counts = windows.sum(axis=tuple(range(rank, 2 * rank)))
    scale = (np.prod(kernel) / counts).astype(np.float32).reshape(1, 1, *counts.shape)
    g.initializer.append(numpy_helper.from_array(scale, f"{base}/count_scale"))
    node.output[0] = f"{y}/all_counted"
    g.node.append(
        helper.make_node("Mul", [node.output[0], f"{base}/count_scale"], [y], name=f"{base}/count")
    )


def _asymmetric(pads: Sequence[int]) -> bool:
    half = len(pads) // 2
    return list(pads[:half]) != list(pads[half:])


# ------------------------------------------------------------------------------------ 4. reshape
@register_fixup("reshape", order=40,
                description="Reshape allowzero=1 -> 0 where the shape holds no 0")
def _reshape_allowzero(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    """allowzero=1 (torch's dynamo exporter writes it) only differs from 0 when the shape holds a 0;
    onnx2torch rejects it."""
    inits = {t.name: t for t in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or not _attr(node, "allowzero", 0):
            continue
        if node.input[1] in inits and 0 not in numpy_helper.to_array(inits[node.input[1]]):
            _del_attr(node, "allowzero")
            changed += 1
    if not changed:
        return []
    return [Fix("reshape-allowzero", changed,
                f"{_plural(changed, 'Reshape')} with allowzero=1 and no 0 in the shape -> allowzero=0")]


@register_fixup("depth-to-space", order=45,
                description="DepthToSpace in DCR mode -> Reshape/Transpose/Reshape")
def _depth_to_space_dcr(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    """DepthToSpace in DCR mode (the default, what TensorFlow exports; the only one before
    opset 11) -> Reshape, Transpose, Reshape: onnx2torch converts only CRD, and its converters
    for 11/13 cannot be replaced through its public registry. Batch kept open with a 0 dim."""
    g = model.graph
    nodes = [
        n for n in g.node
        if n.op_type == "DepthToSpace" and _attr(n, "mode", b"DCR") == b"DCR"
    ]
    if not nodes or dims is None:
        return []
    try:
        shapes = _static_shapes(model, dims, [n.input[0] for n in nodes])
    except Exception:  # left to onnx2torch's own error
        return []
    for node in nodes:
        _, c, h, w = shapes[node.input[0]]
        b = _attr(node, "blocksize")
        base, x, y = node.output[0] + "/dcr", node.input[0], node.output[0]
        g.initializer.extend(
            [
                numpy_helper.from_array(np.array([0, b, b, c // (b * b), h, w], np.int64), f"{base}/split"),
                numpy_helper.from_array(np.array([0, c // (b * b), h * b, w * b], np.int64), f"{base}/merge"),
            ]
        )
        g.node.extend(
            [
                helper.make_node("Reshape", [x, f"{base}/split"], [f"{base}/blocks"], name=f"{base}/split"),
                helper.make_node("Transpose", [f"{base}/blocks"], [f"{base}/moved"], name=f"{base}/move",
                                 perm=[0, 3, 4, 1, 5, 2]),
                helper.make_node("Reshape", [f"{base}/moved", f"{base}/merge"], [y], name=f"{base}/merge"),
            ]
        )
    replaced = {n.output[0] for n in nodes}
    kept = [n for n in g.node if not (n.op_type == "DepthToSpace" and n.output[0] in replaced)]
    del g.node[:]
    g.node.extend(kept)
    _topo_sort(g)
    return [Fix("depth-to-space-dcr", len(nodes),
                f"{_plural(len(nodes), 'DepthToSpace')} (DCR) -> Reshape/Transpose/Reshape")]


# --------------------------------------------------------------------------------------- 5. batch
@register_fixup("batch", order=50,
                description="batch size baked in at export -> any batch (checked on onnxruntime)")
def _batch_in_reshape(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    """Make the graph run at any batch size; verified on onnxruntime, reverted if it fails."""
    g = model.graph
    inputs = real_inputs(g)
    if dims is None or not inputs or not inputs[0].type.tensor_type.shape.dim:
        return []
    first = inputs[0].type.tensor_type.shape.dim[0]
    static_batch = first.dim_value if first.HasField("dim_value") else None
    inits = {t.name: t for t in g.initializer}
    baked_batch = static_batch or 1
    shape_consts = _batch_reshapes(g, inits, baked_batch)
    concats = [
        n
        for n in g.node
        if n.op_type == "Concat"
        and _opset(model) >= 8
        and any(_batch_constant(inits.get(i), baked_batch) for i in n.input)
    ]
    if static_batch is None and not shape_consts and not concats:
        return []
    if static_batch is None and not _carry_batch(model, dims, shape_consts, concats):
        return []

    original = onnx.ModelProto()
    original.CopyFrom(model)
    expanded = patched = 0
    while True:  # each fix can expose the batch to more nodes; lists are re-read (inserts rebuild g.node)
        concats = [n for n in g.node if n.op_type == "Concat"]
        more_expanded = _expand_batch_constants(model, dims, concats, inits, baked_batch)
        more_patched = _patch_batch_reshapes(model, dims, _batch_reshapes(g, inits, baked_batch), inits)
        expanded, patched = expanded + more_expanded, patched + more_patched
        if not more_expanded + more_patched:
            break
    _set_dims(inputs[0], [_BATCH_PARAM] + list(dims[1:]))
    for out in g.output:
        d = out.type.tensor_type.shape.dim
        if d and d[0].HasField("dim_value"):
            d[0].dim_param = _BATCH_PARAM
    del g.value_info[:]  # stale static shapes would contradict batch > 1

    # with no node changed, the fixed graph at batch 1 is the original: one session does for both
    if _runs_batched(model if not expanded + patched else original, model, dims):
        fixes = []
        if patched:
            fixes.append(Fix("batch-reshapes", patched, f"{_plural(patched, 'Reshape')} with batch "
                             f"{baked_batch} baked in -> 0 (copy), checked at batch 2",
                             {"batch": baked_batch}))
        if expanded:
            fixes.append(Fix("batch-constants", expanded, f"{_plural(expanded, 'batch-1 constant')} "
                             "concatenated to batched tensors -> Expand, checked at batch 2"))
        if static_batch is not None:
            fixes.append(Fix("batch-input-relaxed", 1, f"static batch {static_batch} of input "
                             f"'{inputs[0].name}' relaxed, checked at batch 2",
                             {"input": inputs[0].name, "batch": static_batch}))
        return fixes
    model.CopyFrom(original)
    return [Fix(SINGLE_IMAGE, 1, "the graph does not run at batch > 1 after fixes; run it one "
                "image at a time")]


def _batch_reshapes(
    g: onnx.GraphProto, inits: dict[str, TensorProto], batch: int
) -> list[onnx.NodeProto]:
    """Reshapes whose constant target shape starts with the export batch size."""
    return [
        n
        for n in g.node
        if n.op_type == "Reshape"
        and len(n.input) > 1
        and n.input[1] in inits
        and not _attr(n, "allowzero", 0)
        and (s := numpy_helper.to_array(inits[n.input[1]])).ndim == 1
        and s.size > 1
        and s[0] == batch
    ]


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _batch_constant(tensor: TensorProto | None, batch: int) -> bool:
    return tensor is not None and len(tensor.dims) >= 2 and tensor.dims[0] == batch


def _symbolic_batch_shapes(model: onnx.ModelProto, dims: list[int]) -> dict[str, onnx.ValueInfoProto]:
    probe = _with_input_dims(model, [_BATCH_PARAM] + list(dims[1:]))
    del probe.graph.value_info[:]
    return _ranked(_infer(probe, data_prop=True))


def _carry_batch(
    model: onnx.ModelProto,
    dims: list[int],
    reshapes: list[onnx.NodeProto],
    concats: list[onnx.NodeProto],
) -> bool:
    """Whether any of these Reshapes/Concats reads a tensor whose first dim is the batch."""
    known = _symbolic_batch_shapes(model, dims)
    return any(_batch_first(known.get(n.input[0])) for n in reshapes) or any(
        _batch_first(known.get(i)) for n in concats for i in n.input
    )


def _expand_batch_constants(
    model: onnx.ModelProto,
    dims: list[int],
    concats: list[onnx.NodeProto],
    inits: dict[str, TensorProto],
    batch: int,
) -> int:
    """A constant with batch 1 concatenated to batched tensors (ViT's class token, exported at
    batch 1) -> Expand(constant, [N, 1, ...]) with N read from the batched input's shape."""
    g = model.graph
    known = _symbolic_batch_shapes(model, dims)
    expanded = 0
    for node in concats:
        carrier = next((i for i in node.input if _batch_first(known.get(i))), None)
        if carrier is None:
            continue
        for k, name in enumerate(node.input):
            if not _batch_constant(inits.get(name), batch):
                continue
            base = f"{node.output[0]}/batch{k}"
            ones = np.ones(len(inits[name].dims) - 1, np.int64)
            g.initializer.extend(
                [numpy_helper.from_array(np.array([0], np.int64), f"{base}/first"),
                 numpy_helper.from_array(ones, f"{base}/ones")]
            )
            g.node.extend(
                [
                    helper.make_node("Shape", [carrier], [f"{base}/shape"], name=f"{base}/shape"),
                    helper.make_node("Gather", [f"{base}/shape", f"{base}/first"], [f"{base}/n"],
                                     name=f"{base}/n"),
                    helper.make_node("Concat", [f"{base}/n", f"{base}/ones"], [f"{base}/target"],
                                     name=f"{base}/target", axis=0),
                    helper.make_node("Expand", [name, f"{base}/target"], [base], name=base),
                ]
            )
            node.input[k] = base
            expanded += 1
    if expanded:
        _topo_sort(g)
    return expanded


def _batch_first(info: onnx.ValueInfoProto | None) -> bool:
    """First dim not static although every input dim but the batch is: it derives from the batch
    (shape inference renames the symbol after ops such as Resize, so any non-static dim counts)."""
    dims = info.type.tensor_type.shape.dim if info is not None else []
    return bool(dims) and not dims[0].HasField("dim_value")


def _patch_batch_reshapes(
    model: onnx.ModelProto,
    dims: list[int],
    candidates: list[onnx.NodeProto],
    inits: dict[str, TensorProto],
) -> int:
    """Set shape[0] = 0 in the Reshapes whose data input carries the batch dim. Which tensors carry
    it follows from shape inference with a symbolic batch, repeated as each patch frees more."""
    todo, patched = list(candidates), 0
    while todo:
        known = _symbolic_batch_shapes(model, dims)
        new = [n for n in todo if _batch_first(known.get(n.input[0]))]
        if not new:
            break
        for node in new:
            name = f"{node.input[1]}/batch0"  # a fresh initializer: the old one may feed others too
            if name not in inits:
                target = numpy_helper.to_array(inits[node.input[1]]).copy()
                target[0] = 0
                inits[name] = numpy_helper.from_array(target, name)
                model.graph.initializer.append(inits[name])
            node.input[1] = name
            todo.remove(node)
            patched += 1
    return patched


def _runs_batched(original: onnx.ModelProto, fixed: onnx.ModelProto, dims: list[int]) -> bool:
    """Whether `fixed` at batch 2 gives what `original` gives for each sample alone."""
    try:
        single = list(dims)
        single[0] = 1
        a, b = _feeds(original, single, seed=1), _feeds(original, single, seed=2)
        pair = {k: np.concatenate([a[k], b[k]]) if i == 0 else a[k] for i, k in enumerate(a)}
        outs = [o.name for o in original.graph.output]
        run_fixed = tensor_session(fixed, outs)
        run_original = run_fixed if original is fixed else tensor_session(original, outs)
        references = [run_original(a), run_original(b)]
        got = run_fixed(pair)
    except Exception:
        return False
    for i, value in enumerate(got):
        expected = np.concatenate([references[0][i], references[1][i]])
        if value.shape != expected.shape or not np.allclose(
            value, expected, rtol=1e-4, atol=1e-5 * (np.abs(expected).max() + 1e-12)
        ):
            return False
    return True


# -------------------------------------------------------------------------------------- 6. shapes
@register_fixup("shapes", order=60,
                description="tensors without a rank get one (shape inference, then onnxruntime)")
def _missing_shapes(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    """Give a rank to every tensor onnx2torch's own shape inference leaves without one."""
    g = model.graph
    plain = _ranked(_infer(model, data_prop=False))
    produced = [o for n in g.node if n.op_type != "Constant" for o in n.output if o]
    missing = [o for o in produced if o not in plain or not _has_rank(plain[o])]
    if not missing:
        return []
    propagated = _ranked(_infer(model, data_prop=True))
    from_prop = [o for o in missing if o in propagated and _has_rank(propagated[o])]
    rest = [o for o in missing if o not in from_prop]
    existing = {v.name for v in g.value_info}
    for o in from_prop:
        if o not in existing:
            g.value_info.append(propagated[o])
    from_ort: list[str] = []
    if rest and dims is not None:
        try:
            values = run_tensors(model, _feeds(model, dims), rest)
        except Exception:
            values = {}
        for o, v in values.items():
            # the batch dim is left open: the graph may run at other batch sizes
            dims_out = [None] + list(v.shape[1:]) if v.ndim else []
            elem = helper.np_dtype_to_tensor_dtype(v.dtype)
            g.value_info.append(helper.make_tensor_value_info(o, elem, dims_out))
            from_ort.append(o)
    unresolved = len(rest) - len(from_ort)
    fixes = []
    if from_prop:
        fixes.append(Fix("shapes-propagated", len(from_prop), f"{_plural(len(from_prop), 'tensor')}"
                         " without a shape: shape from inference with data propagation"))
    if from_ort:
        fixes.append(Fix("shapes-onnxruntime", len(from_ort), f"{_plural(len(from_ort), 'tensor')}"
                         " without a shape: shape from onnxruntime on a dummy input"))
    if unresolved:
        fixes.append(Fix("shapes-unknown", unresolved, f"{_plural(unresolved, 'tensor')} without a "
                         "shape still unknown (give the input shape)"))
    return fixes


def _has_rank(vi: onnx.ValueInfoProto) -> bool:
    t = vi.type.tensor_type
    return vi.type.HasField("tensor_type") and t.HasField("shape")
