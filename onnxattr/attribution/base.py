"""Attribution methods: a name-keyed registry and the batched forward-backward pass they share.

Every method explains R̄, the mean over all units of the encoder output, per image. A method is a
backward *mode* (plain gradient, or gradients modified per op while a context is active) plus a
function of (x, ∂R̄/∂x). Methods with the same mode share one forward-backward pass; modes whose
forward is the plain net's and whose backward differs only at some ops (`backward_rules`: the
plain gradient, elrp) share one forward too, with one backward each over the retained graph.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import OnnxAttrError
from ..onnxgraph.convert import TorchNet
from ..registry import Registry
from .patching import swapped

#: Every attribution method by name.
METHODS: Registry[type[AttributionMethod]] = Registry("attribution method")


def register_method(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Class decorator: make a method available by its `name` everywhere a method is accepted."""
    return METHODS.register(cls)


def list_methods() -> list[str]:
    return METHODS.list()


def get_method(name: str, **params: Any) -> AttributionMethod:
    return METHODS.get(name)(**params)


def with_defaults(what: str, defaults: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """`defaults` updated by `params` (a method's, a rule's); a name not among the defaults is an
    error that lists them."""
    unknown = set(params) - set(defaults)
    if unknown:
        raise OnnxAttrError(
            f"{what} takes no parameter {', '.join(sorted(unknown))}; "
            f"it takes: {', '.join(defaults) or 'none'}"
        )
    return {**defaults, **params}


class AttributionMethod(ABC):
    """One attribution method; `params` are recorded with the maps in the model space."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        self.params = with_defaults(f"method {self.name!r}", self.defaults, params)

    def mode(self) -> Hashable:
        """Methods whose modes are equal share one forward-backward pass."""
        return "gradient"

    def backward_context(self, net: TorchNet) -> AbstractContextManager:
        """Active during the pass: where a method modifies gradients of particular ops."""
        return contextlib.nullcontext()

    def backward_rules(self, net: TorchNet) -> Mapping[str, BackwardRule] | None:
        """The ops whose gradient this mode replaces, as target -> rule(z, y, ∂R̄/∂y) -> ∂R̄/∂z
        (y = op(z), the op's forward unchanged), so that the pass can share the plain forward;
        None: the mode changes the forward, it runs a pass of its own. The default: {} (the plain
        gradient) unless `backward_context` is overridden."""
        plain = type(self).backward_context is AttributionMethod.backward_context
        return {} if plain else None

    @abstractmethod
    def combine(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The map in model-input space from the input and the (possibly modified) gradient."""


#: rule(z, y, ∂R̄/∂y) -> what the backward pass sends to z in place of ∂R̄/∂z
BackwardRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def encoder_mean(output: torch.Tensor) -> torch.Tensor:
    """R̄ per image: the mean over all units of the encoder output."""
    return output.flatten(1).mean(1)


class _Backward:
    """Which mode's backward pass over the shared forward is running."""

    mode: Hashable = None


class _Select(torch.autograd.Function):
    """Forward y; backward hands the gradient to y's own graph (the op's plain gradient), or, where
    the running mode has a rule for this op, rule(z, y, grad) straight to z."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, z: torch.Tensor, state: _Backward,
                rules: dict[Hashable, BackwardRule]) -> torch.Tensor:
        ctx.state, ctx.rules = state, rules
        ctx.save_for_backward(z, y)
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rule = ctx.rules.get(ctx.state.mode)
        if rule is None:
            return grad, None, None, None
        z, y = ctx.saved_tensors
        return None, rule(z, y, grad), None, None


class _SharedOp(nn.Module):
    """The op, forward unchanged; its backward per mode chosen by `_Select`."""

    def __init__(self, inner: nn.Module, state: _Backward, rules: dict[Hashable, BackwardRule]) -> None:
        super().__init__()
        self.inner, self.state, self.rules = inner, state, rules

    def forward(self, z: torch.Tensor, *rest: Any) -> torch.Tensor:
        y = self.inner(z, *rest)
        return _Select.apply(y, z, self.state, self.rules) if z.requires_grad else y


def _shared_pass(net: TorchNet, x: torch.Tensor, rules: dict[Hashable, Mapping[str, BackwardRule]],
                 on_output: Callable[[torch.Tensor], None] | None) -> dict[Hashable, torch.Tensor]:
    """One forward of the plain net, then one backward per mode (in the order of `rules`):
    mode -> (input, ∂R̄/∂x with that mode's rules)."""
    state = _Backward()
    per_op: dict[str, dict[Hashable, BackwardRule]] = {}
    for mode, ops in rules.items():
        for target, rule in ops.items():
            per_op.setdefault(target, {})[mode] = rule
    wrappers = {t: _SharedOp(net.module.get_submodule(t), state, r) for t, r in per_op.items()}
    xi = x.detach().clone().requires_grad_(True)
    with swapped(net.module, wrappers):
        out = net(xi)
    if on_output is not None:
        on_output(out.detach())
    total = encoder_mean(out).sum()
    grads: dict[Hashable, torch.Tensor] = {}
    for k, mode in enumerate(rules):
        state.mode = mode
        (grads[mode],) = torch.autograd.grad(total, xi, retain_graph=k < len(rules) - 1)
    return grads


def attribute(
    net: TorchNet,
    x: torch.Tensor,
    methods: Iterable[AttributionMethod],
    on_output: Callable[[torch.Tensor], None] | None = None,
    share_forward: bool = True,
) -> dict[str, torch.Tensor]:
    """Maps of every method for the batch `x` (model-input space, same shape as x).

    `on_output` receives the encoder output of the first forward pass (the plain-gradient one when
    there is one), so features need no extra forward pass. `share_forward`: modes with
    `backward_rules` share one forward (False: a forward per mode, as a check or a baseline).
    """
    groups: dict[Hashable, list[AttributionMethod]] = {}
    for m in methods:
        groups.setdefault(m.mode(), []).append(m)
    ordered = sorted(groups.items(), key=lambda kv: kv[0] != "gradient")
    rules = {mode: r for mode, group in ordered
             if share_forward and (r := group[0].backward_rules(net)) is not None}
    grads = _shared_pass(net, x, rules, on_output) if len(rules) > 1 else {}
    maps: dict[str, torch.Tensor] = {}
    for mode, group in ordered:
        xi = x.detach()
        if mode in grads:
            grad = grads[mode]
        else:
            xi = x.detach().clone().requires_grad_(True)
            with group[0].backward_context(net):
                out = net(xi)
                if on_output is not None and not maps and not grads:
                    on_output(out.detach())
                (grad,) = torch.autograd.grad(encoder_mean(out).sum(), xi)
            xi = xi.detach()
        for m in group:
            maps[m.name] = m.combine(xi, grad).detach()
    return maps
