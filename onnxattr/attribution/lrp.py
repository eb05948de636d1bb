"""The composite method `lrp`: LRP with a rule per ONNX op type, chosen from a table.

One forward-backward pass: while the context is active, every op on the input's path is swapped
for its rule's wrapper (after merging BatchNormalization into the linear op before it), and the
encoder output's module is wrapped so that the backward pass starts from R_j = y_j / N, the share
of unit j in R̄ = mean(y). The gradient that reaches the input is then the input relevance.
Where every rule has a backward form (`backward_rules`: the ε preset), lrp instead runs as one
more backward pass over the forward the other methods share.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch
from torch import fx, nn

from ..errors import OnnxAttrError
from ..onnxgraph.convert import TorchNet
from ..optypes import (
    ELEMENTWISE_AFFINE,
    GATES,
    LINEAR,
    METADATA,
    NONNEGATIVE,
    SHAPE_ONLY,
    SIGN_KEEPING,
)
from .base import AttributionMethod, Hooks, OpRule, register_method
from .canonize import merge_batchnorms
from .patching import swapped
from .rule_table import PRESETS, RuleTable, build_table
from .rules import EpsilonBackward, Rule, Site, _Feed


class _OutputRelevance(nn.Module):
    """Forward unchanged; backward multiplies the incoming 1/N by the output: R_j = y_j / N."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, **kw: Any) -> Any:
        y = self.inner(*args, **kw)
        if isinstance(y, (tuple, list)):
            return type(y)(self._scale(t) for t in y)
        return self._scale(y)

    @staticmethod
    def _scale(y: Any) -> Any:
        if isinstance(y, torch.Tensor) and y.requires_grad:
            d = y.detach()
            return _Feed.apply(y, d, d)
        return y


class GraphAnalysis:
    """Which ops lie on the input's path, which are first layers or input normalisation, and gates."""

    def __init__(self, net: TorchNet) -> None:
        self.net = net
        fx_graph = net.module.graph
        live: set[fx.Node] = set()
        for node in fx_graph.nodes:  # fx keeps nodes in topological order
            if (
                node.op == "call_module"
                and node.target in net.onnx_nodes
                and net.op_type(node.target) in METADATA
            ):
                continue  # shape arithmetic downstream carries no relevance
            if node.op == "placeholder" or any(a in live for a in node.all_input_nodes):
                live.add(node)
        self.live = live
        self._nonneg_cache: dict[fx.Node, bool] = {}
        self.sites: dict[str, fx.Node] = {
            n.target: n
            for n in fx_graph.nodes
            if n.op == "call_module" and n.target in net.onnx_nodes and n in live
        }
        self.first, self.input_ops = self._front()
        self.output_target = self._output_target()

    def live_inputs(self, node: fx.Node) -> list[int]:
        return [i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and a in self.live]

    def is_linear(self, node: fx.Node) -> bool:
        return self.net.op_type(node.target) in LINEAR and len(self.live_inputs(node)) == 1

    def _front(self) -> tuple[set[str], set[str]]:
        """Linear ops reached from the input without crossing another; element-wise ops with a
        constant operand met on the way."""
        first: set[str] = set()
        input_ops: set[str] = set()
        stack = [n for n in self.net.module.graph.nodes if n.op == "placeholder"]
        seen: set[fx.Node] = set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node.op == "call_module" and node.target in self.sites:
                if self.is_linear(node):
                    first.add(node.target)
                    continue
                op = self.net.op_type(node.target)
                if op in ELEMENTWISE_AFFINE and len(self.live_inputs(node)) == 1:
                    input_ops.add(node.target)
            stack.extend(node.users)
        return first, input_ops

    def _output_target(self) -> str:
        out = next(n for n in self.net.module.graph.nodes if n.op == "output")
        node = out.args[0]
        while isinstance(node, (tuple, list)):
            node = node[0]
        while (
            isinstance(node, fx.Node)
            and node.op == "call_function"
            and node.target is operator.getitem
        ):
            node = node.args[0]
        if not (
            isinstance(node, fx.Node) and node.op == "call_module" and node.target in self.sites
        ):
            raise OnnxAttrError(
                "the encoder output is not computed by an op of the graph; lrp cannot start there"
            )
        return node.target

    def gate(self, node: fx.Node) -> int | None:
        """For Mul/Div of two activations, the input that is a gate (statically): the divisor, or the
        one produced by a Sigmoid-like op (through shape-only ops)."""
        live = self.live_inputs(node)
        if len(live) != 2:
            return None
        if self.net.op_type(node.target) == "Div":
            return 1
        gated = [i for i in live if self._from_gate(node.args[i])]
        return gated[0] if len(gated) == 1 else None

    def nonnegative(self, node: fx.Node) -> bool:
        """Whether the (single) activation input of `node` is >= 0 by construction."""
        live = self.live_inputs(node)
        return len(live) == 1 and self._nonneg(node.args[live[0]])

    def _nonneg(self, node: fx.Node) -> bool:
        if node.op == "call_function" and node.target is operator.getitem:  # Split outputs
            node = node.args[0]
        if node in self._nonneg_cache:
            return self._nonneg_cache[node]
        result = False
        if node.op == "call_module" and node.target in self.net.onnx_nodes:
            op = self.net.op_type(node.target)
            live = [node.args[i] for i in self.live_inputs(node)]
            result = op in NONNEGATIVE or (
                op in SIGN_KEEPING and bool(live) and all(self._nonneg(a) for a in live)
            )
        self._nonneg_cache[node] = result
        return result

    def _from_gate(self, node: fx.Node) -> bool:
        """Produced by a gate op, through shape-only ops and affine maps with a constant."""
        while node.op == "call_module" and node.target in self.net.onnx_nodes:
            op = self.net.op_type(node.target)
            if op in GATES:
                return True
            live = self.live_inputs(node)
            if not (op in SHAPE_ONLY or op in ELEMENTWISE_AFFINE) or len(live) != 1:
                return False
            node = node.args[live[0]]
        return False


def _rule_at(analysis: GraphAnalysis, table: RuleTable, target: str) -> tuple[Rule, Site]:
    """The table's rule for the op at `target` (first layer, input normalisation or by op type)."""
    net = analysis.net
    op = net.op_type(target)
    rule = (
        table.first if target in analysis.first
        else table.input if target in analysis.input_ops
        else table.rule_for(op)
    )  # fmt: skip
    assert rule is not None  # table.check passed
    node = analysis.sites[target]
    site = Site(op_type=op, name=net.onnx_nodes[target].name or target, gate=analysis.gate(node),
                nonnegative=analysis.nonnegative(node))  # fmt: skip
    return rule, site


def rule_replacements(net: TorchNet, table: RuleTable) -> dict[str, nn.Module]:
    """Every op on the input's path wrapped by its rule; BatchNormalization merged first."""
    analysis = GraphAnalysis(net)
    merged_modules, merged_bns = merge_batchnorms(net)
    table.check(net.op_type(t) for t in analysis.sites if t not in merged_bns)
    replacements: dict[str, nn.Module] = {}
    for target in analysis.sites:
        module = merged_modules.get(target, net.module.get_submodule(target))
        if target in merged_bns:
            wrapped = None
        else:
            rule, site = _rule_at(analysis, table, target)
            wrapped = rule.wrap(module, site)
        if wrapped is not None:
            replacements[target] = wrapped
        elif target in merged_modules:
            replacements[target] = module
    out = analysis.output_target
    replacements[out] = _OutputRelevance(replacements.get(out, net.module.get_submodule(out)))
    return replacements


def backward_rules(net: TorchNet, table: RuleTable) -> dict[str, OpRule] | None:
    """The rules of `rule_replacements` over the plain forward (`Rule.backward_form`), so that lrp
    shares the other methods' forward; None where some op's rule needs a forward of its own.

    A Conv/Gemm+BatchNormalization pair that lrp merges keeps both ops: the ε-rule's input taps go
    on the linear op, its output tap on the BatchNormalization (the same affine map, evaluated
    unmerged: equal up to float rounding)."""
    analysis = GraphAnalysis(net)
    _, merged_bns = merge_batchnorms(net)
    table.check(net.op_type(t) for t in analysis.sites if t not in merged_bns)
    bn_after = {analysis.sites[bn].args[0].target: bn for bn in merged_bns}
    rules: dict[str, OpRule] = {}
    for target in analysis.sites:
        if target in merged_bns:
            continue
        rule, site = _rule_at(analysis, table, target)
        if rule.wrap(net.module.get_submodule(target), site) is None:
            continue  # the op's own gradient
        form = rule.backward_form(site)
        if target in bn_after:
            if not isinstance(form, EpsilonBackward):
                return None
            rules[target], rules[bn_after[target]] = form.inputs_only, form.output_only
        elif form is None:
            return None
        else:
            rules[target] = form
    out = analysis.output_target
    rules[out] = functools.partial(_output_relevance, rules.get(out))
    return rules


def _output_relevance(rule: OpRule | None, call: Callable[..., Any], hooks: Hooks, *args: Any,
                      **kw: Any) -> Any:
    """`_OutputRelevance` as a tap around the output op's rule: R_j = y_j / N."""
    y = call(*args, **kw) if rule is None else rule(call, hooks, *args, **kw)

    def scale(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            return hooks.tap(t, functools.partial(torch.mul, other=t.detach()))
        return t

    return type(y)(scale(t) for t in y) if isinstance(y, (tuple, list)) else scale(y)


@register_method
class LRP(AttributionMethod):
    """Layer-wise relevance propagation with rules per ONNX op type (see `rule_table`).

    Params: `preset` (a name in `rule_table.PRESETS`), `epsilon` (ε of the ε-rule; None: the
    preset's), `rules` (overrides: a TOML file path or a mapping). The map is the relevance at the
    model input; it sums to R̄ when ε → 0 and there are no biases.
    """

    name = "lrp"
    defaults = {"preset": "epsilon", "epsilon": None, "rules": None}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.table = build_table(
            self.params["preset"], self.params["epsilon"], self.params["rules"]
        )
        # per net, by id (the net kept, so that the id stays its own): `add` goes back and forth
        # between the exact and the fast net while it chooses
        self._prepared: dict[int, tuple[TorchNet, dict[str, nn.Module]]] = {}
        self._shared: dict[int, tuple[TorchNet, dict[str, OpRule] | None]] = {}

    def mode(self) -> Hashable:
        p = self.params
        return (
            "lrp",
            p["preset"],
            p["epsilon"],
            json.dumps(p["rules"], sort_keys=True, default=str),
        )

    @contextlib.contextmanager
    def backward_context(self, net: TorchNet) -> Iterator[None]:
        if id(net) not in self._prepared:
            self._prepared[id(net)] = (net, rule_replacements(net, self.table))
        with swapped(net.module, self._prepared[id(net)][1]):
            yield

    def backward_rules(self, net: TorchNet) -> dict[str, OpRule] | None:
        """ε, norm, gate and pass are backward rules (the paper's preset): lrp then shares the
        forward of the other methods; z⁺, αβ, flat, w², z^B and constant need their own."""
        if id(net) not in self._shared:
            self._shared[id(net)] = (net, backward_rules(net, self.table))
        return self._shared[id(net)][1]

    def combine(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad


__all__ = ["LRP", "PRESETS", "GraphAnalysis", "rule_replacements"]
