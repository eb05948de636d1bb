"""Pass 45, depth-to-space: DepthToSpace in DCR mode -> Reshape/Transpose/Reshape
(onnx2torch converts CRD only)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ._registry import Fix, register_fixup
from .edits import (
    get_attr,
    plural,
    static_shapes,
    topo_sort,
)


@register_fixup("depth-to-space", order=45,
                description="DepthToSpace in DCR mode -> Reshape/Transpose/Reshape")
def _depth_to_space_dcr(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    """DepthToSpace in DCR mode (the default, what TensorFlow exports; the only one before
    opset 11) -> Reshape, Transpose, Reshape: onnx2torch converts only CRD, and its converters
    for 11/13 cannot be replaced through its public registry. Batch kept open with a 0 dim."""
    g = model.graph
    nodes = [
        n for n in g.node
        if n.op_type == "DepthToSpace" and get_attr(n, "mode", b"DCR") == b"DCR"
    ]
    if not nodes or dims is None:
        return []
    try:
        shapes = static_shapes(model, dims, [n.input[0] for n in nodes])
    except Exception:  # left to onnx2torch's own error
        return []
    for node in nodes:
        _, c, h, w = shapes[node.input[0]]
        b = get_attr(node, "blocksize")
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
    topo_sort(g)
    return [Fix("depth-to-space-dcr", len(nodes),
                f"{plural(len(nodes), 'DepthToSpace')} (DCR) -> Reshape/Transpose/Reshape")]
