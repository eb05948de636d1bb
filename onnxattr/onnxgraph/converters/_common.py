"""Machinery the converters share: constant inputs read at conversion time, results."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import zip_longest
from typing import Any

import torch
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
    get_const_value,
    onnx_mapping_from_node,
)
from torch import nn


class _ConstInputs(nn.Module, OnnxToTorchModule):
    """An op whose inputs after the first are read at conversion time where they are constant in the
    graph (the usual case: axes, pads, sizes) and passed to forward, in order, where they are not."""

    def __init__(self, static: dict[str, Any], dynamic: Sequence[str]):
        super().__init__()
        self.static = static
        self.dynamic = list(dynamic)

    def values(self, tensors: Sequence[torch.Tensor]) -> dict[str, Any]:
        values = dict(self.static)
        values.update({k: t.tolist() for k, t in zip(self.dynamic, tensors)})
        return values


def _const_inputs(node, graph, names: Sequence[str]):
    """Split the node's inputs after the first into constant values and run-time inputs; returns
    (static values, names of dynamic ones, OnnxMapping with the data and dynamic inputs)."""
    static, dynamic, dynamic_values = {}, [], []
    for name, value_name in zip_longest(names, node.input_values[1:]):
        if not value_name:
            static[name] = None
            continue
        try:
            value = get_const_value(value_name, graph)
            static[name] = value.tolist() if isinstance(value, torch.Tensor) else value
        except KeyError:
            dynamic.append(name)
            dynamic_values.append(value_name)
    mapping = OnnxMapping(inputs=(node.input_values[0], *dynamic_values), outputs=node.output_values)
    return static, dynamic, mapping


def _result(module: nn.Module, mapping: OnnxMapping) -> OperationConverterResult:
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping)


def _node_mapping(node) -> OnnxMapping:
    return onnx_mapping_from_node(node)
