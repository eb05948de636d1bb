"""Reduce*-18/20: axes became an input (one converter for every reduction)."""

from __future__ import annotations

import torch

from ._common import _const_inputs, _ConstInputs, _result
from ._registry import register_converter

_REDUCE_OPS = (
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSumSquare",
)



def _reduce(op: str, x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    if op == "ReduceMean":
        return torch.mean(x, dim=dims, keepdim=keepdim)
    if op == "ReduceMax":
        return torch.amax(x, dim=dims, keepdim=keepdim)
    if op == "ReduceMin":
        return torch.amin(x, dim=dims, keepdim=keepdim)
    if op == "ReduceL1":
        return torch.sum(torch.abs(x), dim=dims, keepdim=keepdim)
    if op == "ReduceL2":
        return torch.sqrt(torch.sum(x * x, dim=dims, keepdim=keepdim))
    if op == "ReduceSumSquare":
        return torch.sum(x * x, dim=dims, keepdim=keepdim)
    if op == "ReduceLogSum":
        return torch.log(torch.sum(x, dim=dims, keepdim=keepdim))
    if op == "ReduceLogSumExp":
        return torch.logsumexp(x, dim=dims, keepdim=keepdim)
    for d in sorted(dims, reverse=True):  # ReduceProd: torch.prod takes one dim
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


def _per_element(op: str, x: torch.Tensor) -> torch.Tensor:
    if op in ("ReduceL1", "ReduceL2"):
        return torch.abs(x)
    if op == "ReduceSumSquare":
        return x * x
    if op == "ReduceLogSum":
        return torch.log(x)
    return x


class OnnxReduce18(_ConstInputs):
    """Reduce*-18: axes is an input; empty axes reduce everything unless noop_with_empty_axes."""

    def __init__(self, op: str, keepdims: bool, noop: bool, static, dynamic):
        super().__init__(static, dynamic)
        self.op, self.keepdims, self.noop = op, keepdims, noop

    def forward(self, x: torch.Tensor, *dynamic: torch.Tensor) -> torch.Tensor:
        axes = self.values(dynamic)["axes"]
        if not axes:
            if self.noop:  # no reduction, but the per-element part still applies (as onnxruntime)
                return _per_element(self.op, x)
            axes = list(range(x.dim()))
        dims = sorted({a % x.dim() for a in axes})
        return _reduce(self.op, x, dims, self.keepdims)


@register_converter("ReduceMax", 20)  # 20: bool inputs allowed
@register_converter("ReduceMin", 20)
def _convert_reduce(node, graph):
    static, dynamic, mapping = _const_inputs(node, graph, ["axes"])
    a = node.attributes
    module = OnnxReduce18(
        node.operation_type, bool(a.get("keepdims", 1)), bool(a.get("noop_with_empty_axes", 0)),
        static, dynamic,
    )
    return _result(module, mapping)


for _op in _REDUCE_OPS:
    register_converter(_op, 18)(_convert_reduce)
