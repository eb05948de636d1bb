"""Ops that move values: Split-18 (num_outputs), Slice-1, SpaceToDepth, NonZero-9 (DepthToSpace in
DCR mode, at every opset, is the fix-up `depth-to-space`)."""

from __future__ import annotations

import math

import torch
from onnx2torch.utils.common import (
    OnnxToTorchModule,
)
from torch import nn

from ._common import _const_inputs, _ConstInputs, _node_mapping, _result
from ._registry import register_converter


class OnnxSplit18(_ConstInputs):
    """Split-18: sizes from the `split` input, else `num_outputs` chunks (the last one smaller)."""

    def __init__(self, axis: int, num_outputs: int, static, dynamic):
        super().__init__(static, dynamic)
        self.axis, self.num_outputs = axis, num_outputs

    def forward(self, x: torch.Tensor, *dynamic: torch.Tensor):
        sizes = self.values(dynamic)["split"]
        if sizes is None:
            sizes = math.ceil(x.shape[self.axis] / self.num_outputs)
        parts = torch.split(x, sizes, dim=self.axis)
        return parts[0] if self.num_outputs == 1 else parts  # onnx2torch indexes only multi-outputs


@register_converter("Split", 18)
def _convert_split(node, graph):
    static, dynamic, mapping = _const_inputs(node, graph, ["split"])
    a = node.attributes
    module = OnnxSplit18(a.get("axis", 0), len(node.output_values), static, dynamic)
    return _result(module, mapping)



class OnnxSlice1(nn.Module, OnnxToTorchModule):
    """Slice-1: starts/ends/axes are attributes."""

    def __init__(self, starts: list[int], ends: list[int], axes: list[int] | None):
        super().__init__()
        self.starts, self.ends, self.axes = starts, ends, axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = [slice(None)] * x.dim()
        for axis, start, end in zip(self.axes or range(len(self.starts)), self.starts, self.ends):
            index[axis] = slice(start, end)
        return x[tuple(index)]


@register_converter("Slice", 1)  # onnx2torch files a broken one under Slice-9
def _convert_slice_1(node, graph):
    a = node.attributes
    return _result(OnnxSlice1(a["starts"], a["ends"], a.get("axes")), _node_mapping(node))


class OnnxSpaceToDepth(nn.Module, OnnxToTorchModule):
    """SpaceToDepth: blocks of the image become channels (DCR order, the inverse of DepthToSpace)."""

    def __init__(self, blocksize: int):
        super().__init__()
        self.blocksize = blocksize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.blocksize
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)


@register_converter("SpaceToDepth", 1, 13)
def _convert_space_to_depth(node, graph):
    return _result(OnnxSpaceToDepth(node.attributes["blocksize"]), _node_mapping(node))


class OnnxNonZero(nn.Module, OnnxToTorchModule):
    """Indices of non-zero elements as ONNX lays them out: (rank, count)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(x).T


@register_converter("NonZero", 9)  # not onnx2torch's NonZero-13: that one is transposed
def _convert_nonzero(node, graph):
    return _result(OnnxNonZero(), _node_mapping(node))
