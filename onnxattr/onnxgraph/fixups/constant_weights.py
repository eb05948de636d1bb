"""Pass 10, constant-weights: Constant nodes -> initializers, nodes on constants only
folded (onnx2torch reads weights from initializers only)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ._registry import Fix, register_fixup
from .edits import (
    plural,
    remove_dead,
)


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
    fixes = [Fix("constant-nodes", moved, f"{plural(moved, 'Constant node')} -> initializers")
             ] if moved else []
    if folded:
        kinds = ", ".join(f"{op} x{n}" for op, n in sorted(folded.items()))
        n = sum(folded.values())
        fixes.append(Fix("constant-folded", n,
                         f"{plural(n, 'node')} on constants only folded ({kinds})",
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
        remove_dead(g)
    return folded
