"""Per-node facts that node listing (graph) and candidate marking (candidates) both use; a leaf
module, so that graph can import candidates without candidates importing graph back."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx


def static_shape(value: onnx.ValueInfoProto) -> list[int | None]:
    """Dims of a tensor, None where symbolic or unknown."""
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


@dataclass
class NodeInfo:
    name: str
    op_type: str
    outputs: list[str]
    shapes: list[list[int | None] | None]
    candidate: str = ""  # why this node is a candidate encoder output, or ""
    #: False for Constant nodes and nodes computed from initializers only (not from the input):
    #: they cannot be an encoder output, and `onnxattr nodes` hides them unless asked.
    on_input_path: bool = True
    inputs: list[str] = field(default_factory=list)

    @property
    def numel(self) -> int | None:
        shape = self.shapes[0] if self.shapes else None
        if not shape or any(d is None for d in shape[1:]):
            return None
        return int(np.prod(shape[1:]))
