"""Graph-editing helpers every fix-up shares: shapes (inference, else onnxruntime), node
attributes, rewiring, dead-code removal and topological order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

from ...errors import OnnxAttrError
from ..graph import real_inputs, run_tensors, static_shape


def set_dims(value_info: onnx.ValueInfoProto, dims: Sequence[int | str | None]) -> None:
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        elif d is not None:
            dim.dim_value = d


def with_input_dims(model: onnx.ModelProto, dims: Sequence[int | str]) -> onnx.ModelProto:
    """A copy whose first input has the given dims (the others keep theirs)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    set_dims(real_inputs(copy.graph)[0], dims)
    return copy


def infer(model: onnx.ModelProto, data_prop: bool) -> onnx.ModelProto | None:
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


def ranked(model: onnx.ModelProto | None) -> dict[str, onnx.ValueInfoProto]:
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


def random_feeds(model: onnx.ModelProto, dims: Sequence[int], seed: int = 0) -> dict[str, np.ndarray]:
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


def static_shapes(
    model: onnx.ModelProto, dims: Sequence[int], names: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    """Static shapes of the named tensors for input dims `dims`: ONNX inference, else onnxruntime."""
    names = set(names)
    known = ranked(infer(with_input_dims(model, dims), data_prop=True))
    shapes = {}
    for n in names:
        d = static_shape(known[n]) if n in known else None
        if d and None not in d:
            shapes[n] = tuple(int(x) for x in d)
    missing = names - set(shapes) - {t.name for t in model.graph.initializer}
    if missing:
        values = run_tensors(model, random_feeds(model, dims), sorted(missing))
        shapes.update({n: tuple(v.shape) for n, v in values.items()})
    for t in model.graph.initializer:
        if t.name in names:
            shapes[t.name] = tuple(t.dims)
    return shapes


def replace_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every consumer of `old` read `new`; a graph output keeps its name via an Identity."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    if any(o.name == old for o in graph.output):
        graph.node.append(helper.make_node("Identity", [new], [old], name=f"{old}/identity"))


def remove_dead(graph: onnx.GraphProto) -> None:
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


def topo_sort(graph: onnx.GraphProto) -> None:
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


def get_attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    del_attr(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def del_attr(node: onnx.NodeProto, name: str) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")



def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
