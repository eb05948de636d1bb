"""Gelu-20 (torch's dynamo exporter writes it)."""

from __future__ import annotations

from torch import nn

from ._common import _node_mapping, _result
from ._registry import register_converter


@register_converter("Gelu", 20)
def _convert_gelu(node, graph):
    approximate = node.attributes.get("approximate", "none")
    return _result(nn.GELU(approximate=approximate), _node_mapping(node))
