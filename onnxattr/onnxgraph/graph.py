"""Stage 2a: load an ONNX model, list its nodes with shapes, resolve the encoder node, truncate there.

Truncation works on the protobuf alone (no onnx.checker, no onnxruntime), so whatever lies downstream
of the encoder — heads, custom-domain ops, ops no runtime loads — never matters.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

from ..errors import OnnxAttrError
from .candidates import mark_candidates
from .layout import channel_axis as channel_axis  # its home before the layout module
from .nodes import NodeInfo, static_shape


def load(path: str | Path) -> onnx.ModelProto:
    """Load a model, with its external data (torch's exporter writes `model.onnx.data`) if any."""
    path = Path(path)
    if not path.is_file():
        raise OnnxAttrError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        raise OnnxAttrError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    if not model.graph.node:  # protobuf parses an empty (or zero-byte) file as an empty model
        raise OnnxAttrError(f"{path} is not a readable ONNX model (it holds no graph nodes)")
    return model


def sha256(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString()).hexdigest()


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (exporters writing IR < 4 list those too)."""
    inits = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in inits]


def graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The one real input."""
    inputs = real_inputs(model.graph)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise OnnxAttrError(f"onnxattr needs a model with one image input; this one has: {names}")
    return inputs[0]


def infer_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes of every tensor: onnx shape inference, then onnxruntime on a dummy input for the rest."""
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    shapes: dict[str, list[int | None]] = {}
    g = inferred.graph
    for v in list(g.input) + list(g.value_info) + list(g.output):
        if v.type.tensor_type.HasField("shape"):
            shapes[v.name] = static_shape(v)
    missing = [o for n in model.graph.node for o in n.output if o and not _complete(shapes.get(o))]
    if missing:
        shapes.update(_shapes_from_runtime(model, missing))
    return shapes


def _complete(shape: list[int | None] | None) -> bool:
    return shape is not None and all(d is not None for d in shape[1:])


def _shapes_from_runtime(model: onnx.ModelProto, names: list[str]) -> dict[str, list[int | None]]:
    """Run onnxruntime once with every missing tensor exposed as an output; {} when it cannot run."""
    try:
        inp = graph_input(model)
        dummy = np.zeros(dummy_shape(static_shape(inp)), dtype=np.float32)
        values = run_tensors(model, {inp.name: dummy}, names)
    except Exception:
        return {}
    return {n: [None, *v.shape[1:]] for n, v in values.items() if hasattr(v, "shape")}


def run_tensors(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: Iterable[str]) -> dict:
    """Values of the named tensors (any intermediate) computed by onnxruntime."""
    names = list(dict.fromkeys(names))
    return dict(zip(names, tensor_session(model, names)(feeds)))


def tensor_session(model: onnx.ModelProto, names: list[str]) -> Callable[[dict], list[np.ndarray]]:
    """An onnxruntime session whose outputs are the named tensors (any intermediate)."""
    import onnxruntime as ort

    probe = model
    if names != [o.name for o in model.graph.output]:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures are expected while probing; callers handle them
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return lambda feeds: session.run(names, feeds)


def dummy_shape(shape: list[int | None]) -> list[int]:
    """A concrete shape for a dummy run: batch 1, 224 for unknown spatial dims, 3 for channels."""
    out = []
    for i, d in enumerate(shape):
        if d is not None:
            out.append(d)
        elif i == 0:
            out.append(1)
        else:
            out.append(3 if len(shape) == 4 and i in (1, 3) and 3 not in shape[1:] else 224)
    return out


def list_nodes(model: onnx.ModelProto) -> list[NodeInfo]:
    """Every node with its output shapes, candidate encoder outputs marked with a reason."""
    shapes = infer_shapes(model)
    infos = [
        NodeInfo(
            name=n.name,
            op_type=n.op_type,
            outputs=list(n.output),
            shapes=[shapes.get(o) for o in n.output],
            inputs=[i for i in n.input if i],
        )
        for n in model.graph.node
    ]
    live = input_dependent(model)
    for k, info in enumerate(infos):
        info.on_input_path = k in live
    mark_candidates(model, infos)
    return infos


def input_dependent(model: onnx.ModelProto) -> set[int]:
    """Indices of the nodes whose outputs depend on a graph input (nodes are topologically
    sorted in a valid model)."""
    inits = {i.name for i in model.graph.initializer}
    live = {i.name for i in model.graph.input if i.name not in inits}
    nodes: set[int] = set()
    for k, n in enumerate(model.graph.node):
        if any(i in live for i in [*n.input, *_subgraph_inputs(n)]):
            nodes.add(k)
            live.update(o for o in n.output if o)
    return nodes


def resolve_encoder(model: onnx.ModelProto, name: str | None) -> str:
    """The tensor name for an encoder given as a node name or tensor name (default: graph output)."""
    if name is None:
        if not model.graph.output:
            raise OnnxAttrError("the model declares no graph outputs, so there is no default "
                                "encoder; name one with `encoder_node=NAME` (`onnxattr nodes "
                                "MODEL` lists the tensors)")
        return model.graph.output[0].name
    tensors = {o for n in model.graph.node for o in n.output if o}
    if name in tensors:
        return name
    by_node = {n.name: n for n in model.graph.node if n.name}
    if name in by_node:
        return by_node[name].output[0]
    close = difflib.get_close_matches(name, list(by_node) + sorted(tensors), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise OnnxAttrError(
        f"node {name!r} not found{hint} `onnxattr nodes MODEL` lists the nodes and tensors"
    )


def truncate(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """The sub-model of exactly the nodes `tensor` depends on, with `tensor` as its one output."""
    producers = {o: n for n in model.graph.node for o in n.output if o}
    needed_nodes: list[onnx.NodeProto] = []
    kept: set[int] = set()
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        if t in seen or t not in producers:
            seen.add(t)
            continue
        seen.add(t)
        node = producers[t]
        if id(node) not in kept:
            kept.add(id(node))
            needed_nodes.append(node)
            stack.extend(i for i in node.input if i)
            stack.extend(_subgraph_inputs(node))
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    needed_nodes.sort(key=lambda n: order[id(n)])
    inits = [i for i in model.graph.initializer if i.name in seen]
    inputs = [i for i in model.graph.input if i.name in seen and i.name not in {x.name for x in inits}]
    if not inputs:
        raise OnnxAttrError(f"tensor {tensor!r} does not depend on the model input; pick another node")
    value_info = [v for v in model.graph.value_info if v.name in seen]
    out_vi = next((v for v in list(model.graph.value_info) + list(model.graph.output)
                   if v.name == tensor), None)
    graph = helper.make_graph(
        needed_nodes, f"{model.graph.name or 'model'}_encoder", inputs,
        [out_vi or helper.make_empty_tensor_value_info(tensor)],
        initializer=inits, value_info=[v for v in value_info if v.name != tensor],
    )
    domains = {n.domain for n in needed_nodes} | {"", "ai.onnx"}
    opsets = [o for o in model.opset_import if o.domain in domains]
    out = helper.make_model(graph, opset_imports=opsets, producer_name=model.producer_name)
    out.ir_version = model.ir_version
    if not out.graph.output[0].type.HasField("tensor_type"):
        _type_output(out)
    elem = out.graph.output[0].type.tensor_type.elem_type
    if elem in _NOT_DIFFERENTIABLE:
        raise OnnxAttrError(
            f"encoder tensor {tensor!r} is {onnx.TensorProto.DataType.Name(elem)} (indices or "
            "flags, e.g. an ArgMax's), which has no gradient to attribute; pick a float tensor "
            "before it with `encoder_node=NAME` (`onnxattr nodes MODEL` lists them)")
    return out


#: Tensor types without a gradient: an encoder ending in one cannot be attributed.
_NOT_DIFFERENTIABLE = {getattr(onnx.TensorProto, t) for t in (
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "STRING")}


def _type_output(model: onnx.ModelProto) -> None:
    """Give the output its inferred type (onnx.checker and onnxruntime want one); float if unknown."""
    name = model.graph.output[0].name
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False)
        found = next((v for v in inferred.graph.value_info if v.name == name), None)
    except Exception:
        found = None
    model.graph.output[0].CopyFrom(found or helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))


def _subgraph_inputs(node: onnx.NodeProto) -> list[str]:
    """Outer-scope tensors referenced inside If/Loop/Scan bodies."""
    names: list[str] = []
    for attr in node.attribute:
        graphs = list(attr.g.node and [attr.g] or []) + list(attr.graphs)
        for g in graphs:
            for n in g.node:
                names.extend(i for i in n.input if i)
                for a in n.attribute:
                    if a.g.node or a.graphs:
                        names.extend(_subgraph_inputs(n))
    return names
