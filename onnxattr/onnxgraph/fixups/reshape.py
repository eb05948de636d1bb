"""Pass 40, reshape: allowzero=1 -> 0 where the shape has no 0 (same result; onnx2torch rejects 1)."""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from ._registry import Fix, register_fixup
from .edits import (
    del_attr,
    get_attr,
    plural,
)


@register_fixup("reshape", order=40,
                description="Reshape allowzero=1 -> 0 where the shape holds no 0")
def _reshape_allowzero(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    """allowzero=1 (torch's dynamo exporter writes it) only differs from 0 when the shape holds a 0;
    onnx2torch rejects it."""
    inits = {t.name: t for t in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or not get_attr(node, "allowzero", 0):
            continue
        if node.input[1] in inits and 0 not in numpy_helper.to_array(inits[node.input[1]]):
            del_attr(node, "allowzero")
            changed += 1
    if not changed:
        return []
    return [Fix("reshape-allowzero", changed,
                f"{plural(changed, 'Reshape')} with allowzero=1 and no 0 in the shape -> allowzero=0")]
