"""Pass 50, batch: a batch size baked in at export -> any batch, checked on onnxruntime at batch 2,
else reverted (``single-image``)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..graph import real_inputs, tensor_session
from ._registry import SINGLE_IMAGE, Fix, register_fixup
from .edits import (
    get_attr,
    infer,
    opset,
    plural,
    random_feeds,
    ranked,
    set_dims,
    topo_sort,
    with_input_dims,
)

_BATCH_PARAM = "batch"


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
        and opset(model) >= 8
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
    set_dims(inputs[0], [_BATCH_PARAM] + list(dims[1:]))
    for out in g.output:
        d = out.type.tensor_type.shape.dim
        if d and d[0].HasField("dim_value"):
            d[0].dim_param = _BATCH_PARAM
    del g.value_info[:]  # stale static shapes would contradict batch > 1

    # with no node changed, the fixed graph at batch 1 is the original: one session does for both
    if _runs_batched(model if not expanded + patched else original, model, dims):
        fixes = []
        if patched:
            fixes.append(Fix("batch-reshapes", patched, f"{plural(patched, 'Reshape')} with batch "
                             f"{baked_batch} baked in -> 0 (copy), checked at batch 2",
                             {"batch": baked_batch}))
        if expanded:
            fixes.append(Fix("batch-constants", expanded, f"{plural(expanded, 'batch-1 constant')} "
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
        and not get_attr(n, "allowzero", 0)
        and (s := numpy_helper.to_array(inits[n.input[1]])).ndim == 1
        and s.size > 1
        and s[0] == batch
    ]



def _batch_constant(tensor: TensorProto | None, batch: int) -> bool:
    return tensor is not None and len(tensor.dims) >= 2 and tensor.dims[0] == batch


def _symbolic_batch_shapes(model: onnx.ModelProto, dims: list[int]) -> dict[str, onnx.ValueInfoProto]:
    probe = with_input_dims(model, [_BATCH_PARAM] + list(dims[1:]))
    del probe.graph.value_info[:]
    return ranked(infer(probe, data_prop=True))


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
        topo_sort(g)
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
        a, b = random_feeds(original, single, seed=1), random_feeds(original, single, seed=2)
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
