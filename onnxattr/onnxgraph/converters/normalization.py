"""BatchNormalization-7 (spatial attribute) and GroupNormalization-18/21."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from onnx2torch.utils.common import (
    OnnxToTorchModule,
)
from torch import nn

from ._common import _node_mapping, _result
from ._registry import existing_converter, register_converter


def _batch_norm_7(base: Callable) -> Callable:
    """BatchNormalization-7 has `spatial`; with spatial=1 (default) it is BatchNormalization-9."""

    def convert(node, graph):
        if node.attributes.get("spatial", 1) != 1:
            raise NotImplementedError("BatchNormalization-7 with spatial=0 is not supported")
        return base(node, graph)

    return convert


register_converter("BatchNormalization", 7)(_batch_norm_7(existing_converter("BatchNormalization", 9)))



class OnnxGroupNorm(nn.Module, OnnxToTorchModule):
    """GroupNormalization: opset 18 has one scale/bias per group, 21 one per channel."""

    def __init__(self, groups: int, epsilon: float, per_group: bool):
        super().__init__()
        self.groups, self.epsilon, self.per_group = groups, epsilon, per_group

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.per_group:
            repeat = x.shape[1] // self.groups
            scale, bias = scale.repeat_interleave(repeat), bias.repeat_interleave(repeat)
        return F.group_norm(x, self.groups, scale, bias, self.epsilon)


def _group_norm(per_group: bool) -> Callable:
    def convert(node, graph):
        a = node.attributes
        module = OnnxGroupNorm(a["num_groups"], a.get("epsilon", 1e-5), per_group)
        return _result(module, _node_mapping(node))

    return convert


register_converter("GroupNormalization", 18)(_group_norm(per_group=True))
register_converter("GroupNormalization", 21)(_group_norm(per_group=False))
