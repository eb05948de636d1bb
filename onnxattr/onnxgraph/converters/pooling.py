"""AveragePool-19/22 (dilations) and GlobalMaxPool."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.utils.common import (
    OnnxToTorchModule,
)
from torch import nn

from ._common import _node_mapping, _result
from ._registry import register_converter


class OnnxAveragePool19(nn.Module, OnnxToTorchModule):
    """AveragePool-19/22: adds dilations (window sums / counts by a grouped convolution).
    Symmetric pads only: the fix-up `explicit-pads` rewrites asymmetric ones at every opset."""

    def __init__(self, kernel, strides, pads, dilations, count_include_pad: bool, ceil_mode: bool):
        super().__init__()
        self.kernel, self.strides, self.pads = list(kernel), list(strides), list(pads)
        self.dilations, self.count_include_pad, self.ceil_mode = list(dilations), count_include_pad, ceil_mode
        rank = len(self.kernel)
        self.simple = all(d == 1 for d in self.dilations) and all(
            2 * p <= k for p, k in zip(self.pads[:rank], self.kernel)
        )
        if not self.simple and ceil_mode:
            raise NotImplementedError("AveragePool with ceil_mode and dilations")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = len(self.kernel)
        if self.simple:
            pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
            return pool(x, self.kernel, self.strides, self.pads[:rank], self.ceil_mode, self.count_include_pad)
        conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
        torch_pads = [p for p in reversed(self.pads[:rank]) for _ in range(2)]
        channels = x.shape[1]
        ones = x.new_ones(channels, 1, *self.kernel)
        sums = conv(F.pad(x, torch_pads), ones, None, self.strides, 0, self.dilations, channels)
        if self.count_include_pad:
            return sums / math.prod(self.kernel)
        mask = F.pad(x.new_ones(1, 1, *x.shape[2:]), torch_pads)
        counts = conv(mask, ones[:1], None, self.strides, 0, self.dilations)
        return sums / counts


@register_converter("AveragePool", 19, 22)
def _convert_average_pool(node, graph):
    a = node.attributes
    kernel = a["kernel_shape"]
    rank = len(kernel)
    if a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        raise NotImplementedError("AveragePool with auto_pad=SAME_*: run onnxattr's fix_up first")
    pads = a.get("pads", [0] * 2 * rank)
    if list(pads[:rank]) != list(pads[rank:]):
        raise NotImplementedError("AveragePool with asymmetric pads: run onnxattr's fix_up first")
    module = OnnxAveragePool19(
        kernel, a.get("strides", [1] * rank), pads,
        a.get("dilations", [1] * rank), bool(a.get("count_include_pad", 0)), bool(a.get("ceil_mode", 0)),
    )
    return _result(module, _node_mapping(node))



class OnnxGlobalMaxPool(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


@register_converter("GlobalMaxPool", 1, 22)
def _convert_global_max_pool(node, graph):
    return _result(OnnxGlobalMaxPool(), _node_mapping(node))
