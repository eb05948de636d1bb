"""Pass 60, shapes: tensors without a rank after ONNX shape inference get value_info (inference
with data propagation, then onnxruntime on a dummy input)."""

from __future__ import annotations

import onnx
from onnx import helper

from ..graph import run_tensors
from ._registry import Fix, register_fixup
from .edits import (
    infer,
    plural,
    random_feeds,
    ranked,
)


@register_fixup("shapes", order=60,
                description="tensors without a rank get one (shape inference, then onnxruntime)")
def _missing_shapes(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    """Give a rank to every tensor onnx2torch's own shape inference leaves without one."""
    g = model.graph
    plain = ranked(infer(model, data_prop=False))
    produced = [o for n in g.node if n.op_type != "Constant" for o in n.output if o]
    missing = [o for o in produced if o not in plain or not _has_rank(plain[o])]
    if not missing:
        return []
    propagated = ranked(infer(model, data_prop=True))
    from_prop = [o for o in missing if o in propagated and _has_rank(propagated[o])]
    rest = [o for o in missing if o not in from_prop]
    existing = {v.name for v in g.value_info}
    for o in from_prop:
        if o not in existing:
            g.value_info.append(propagated[o])
    from_ort: list[str] = []
    if rest and dims is not None:
        try:
            values = run_tensors(model, random_feeds(model, dims), rest)
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
        fixes.append(Fix("shapes-propagated", len(from_prop), f"{plural(len(from_prop), 'tensor')}"
                         " without a shape: shape from inference with data propagation"))
    if from_ort:
        fixes.append(Fix("shapes-onnxruntime", len(from_ort), f"{plural(len(from_ort), 'tensor')}"
                         " without a shape: shape from onnxruntime on a dummy input"))
    if unresolved:
        fixes.append(Fix("shapes-unknown", unresolved, f"{plural(unresolved, 'tensor')} without a "
                         "shape still unknown (give the input shape)"))
    return fixes


def _has_rank(vi: onnx.ValueInfoProto) -> bool:
    t = vi.type.tensor_type
    return vi.type.HasField("tensor_type") and t.HasField("shape")
