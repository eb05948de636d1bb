"""Canonizer: BatchNormalization merged into the linear op before it, on the converted torch net.

LRP rules are defined for linear ops followed by activations; a BatchNormalization right after a
Conv/ConvTranspose/Gemm is part of that affine map, so the merged op gets the linear op's rule
(as Zennit's MergeBatchNorm canonizers do). A BatchNormalization that cannot be merged (after an
activation, or after an op with several consumers) keeps its own table entry.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..onnxgraph.convert import TorchNet
from ..optypes import BN_MERGEABLE


def _linear_core(module: nn.Module) -> nn.Module | None:
    """The module holding the weights: onnx2torch wraps asymmetric-padding convs as (pad, conv)."""
    if isinstance(module, nn.Sequential) and len(module) > 0:
        module = module[-1]
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and module.weight is not None:
        return module
    return None


def _merged(linear: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of `linear` computing bn(linear(x)) with the running statistics (eval mode)."""
    new = copy.deepcopy(linear)
    core = _linear_core(new)
    assert core is not None
    with torch.no_grad():
        scale = (bn.running_var + bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0.0)
        w = core.weight
        if isinstance(core, nn.modules.conv._ConvTransposeNd):  # (in, out/groups, *k)
            g = core.groups
            s = scale.view(g, 1, -1, *([1] * (w.dim() - 2)))
            core.weight.data = (w.view(g, w.shape[0] // g, *w.shape[1:]) * s).view_as(w)
        else:  # (out, in/groups, *k) or (out, in)
            core.weight.data = w * scale.view(-1, *([1] * (w.dim() - 1)))
        bias = core.bias if core.bias is not None else torch.zeros_like(scale)
        core.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
    return new


def merge_batchnorms(net: TorchNet) -> tuple[dict[str, nn.Module], set[str]]:
    """Replacements merging every mergeable BatchNormalization, and the merged BN targets.

    The linear op's target maps to the merged copy, the BN's target to an identity; the net
    itself is not changed (apply the replacements with `patching.swapped`).
    """
    replacements: dict[str, nn.Module] = {}
    merged: set[str] = set()
    for node in net.module.graph.nodes:
        if node.op != "call_module" or net.onnx_nodes.get(node.target) is None:
            continue
        if net.op_type(node.target) != "BatchNormalization":
            continue
        bn = net.module.get_submodule(node.target)
        prev = node.args[0] if node.args else None
        if not (
            isinstance(bn, nn.modules.batchnorm._BatchNorm)
            and bn.running_mean is not None
            and isinstance(prev, fx.Node)
            and prev.op == "call_module"
            and prev.target in net.onnx_nodes
            and net.op_type(prev.target) in BN_MERGEABLE
            and len(prev.users) == 1
            and prev.target not in replacements
        ):
            continue
        linear = net.module.get_submodule(prev.target)
        if _linear_core(linear) is None:
            continue
        replacements[prev.target] = _merged(linear, bn)
        replacements[node.target] = nn.Identity()
        merged.add(node.target)
    return replacements, merged
