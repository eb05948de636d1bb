"""Attribution methods: a name-keyed registry and the batched forward-backward pass they share.

Every method explains R̄, the mean over all units of the encoder output, per image. A method is a
backward *mode* (plain gradient, or gradients modified per op while a context is active) plus a
function of (x, ∂R̄/∂x). Methods with the same mode share one forward-backward pass; modes whose
forward is the plain net's and whose backward differs only at some ops (`backward_rules`: the
plain gradient, elrp, lrp where its rules are backward rules) share one forward too, with one
backward each over the retained graph.
"""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

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

    def backward_rules(self, net: TorchNet) -> Mapping[str, OpRule] | None:
        """The ops whose backward this mode changes, as target -> `OpRule` (the op's forward
        unchanged; `replacing` makes one from a rule(z, y, ∂R̄/∂y) -> ∂R̄/∂z), so that the pass
        can share the plain forward; None: the mode changes the forward, it runs a pass of its
        own. The default: {} (the plain gradient) unless `backward_context` is overridden."""
        plain = type(self).backward_context is AttributionMethod.backward_context
        return {} if plain else None

    def reference_pixel(self) -> float | None:
        """The probe pixel value (0-255, every channel) that the method measures its input from,
        as `attribute`'s `references` take it after preprocessing; None: the model's own zero."""
        return None

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
    """Forward y; backward hands the gradient to y's own graph (the op's plain gradient), or, while
    `mode` runs, rule(z, y, grad) straight to z.

    No gradient (None) passes on as None, not as zeros: the graph below an op whose rule bypasses
    it (and below a gate's cut) then costs nothing in that mode's backward (with zeros, lrp ran
    every ReLU6 backward of mobilenet_v2 once more, and sharing its forward cost time)."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, z: torch.Tensor, state: _Backward, mode: Hashable,
                rule: BackwardRule) -> torch.Tensor:
        ctx.set_materialize_grads(False)
        ctx.state, ctx.mode, ctx.rule = state, mode, rule
        ctx.save_for_backward(z, y)
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        if ctx.state.mode != ctx.mode or grad is None:
            return grad, None, None, None, None
        z, y = ctx.saved_tensors
        return None, ctx.rule(z, y, grad), None, None, None


class _Tap(torch.autograd.Function):
    """Forward t; backward fn(grad) in place of grad while `mode` runs, else grad untouched (None
    as None, see `_Select`)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, state: _Backward, mode: Hashable,
                fn: Callable[[torch.Tensor], torch.Tensor | None]) -> torch.Tensor:
        ctx.set_materialize_grads(False)
        ctx.state, ctx.mode, ctx.fn = state, mode, fn
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None) -> tuple[torch.Tensor | None, None, None, None]:
        if ctx.state.mode != ctx.mode or grad is None:
            return grad, None, None, None
        return ctx.fn(grad), None, None, None


class Hooks:
    """What an `OpRule` may set up during the shared forward; each acts in its own mode's
    backward only, the other modes' gradients pass unchanged."""

    def __init__(self, state: _Backward, mode: Hashable) -> None:
        self.state, self.mode = state, mode

    def tap(self, t: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> torch.Tensor:
        """t unchanged; what reaches t in this mode's backward is fn(∂R̄/∂t) (None: nothing)."""
        return _Tap.apply(t, self.state, self.mode, fn) if t.requires_grad else t

    def replace(self, y: torch.Tensor, z: torch.Tensor, rule: BackwardRule) -> torch.Tensor:
        """y = op(z) unchanged; in this mode's backward rule(z, y, ∂R̄/∂y) goes straight to z,
        bypassing the op's own gradient."""
        return _Select.apply(y, z, self.state, self.mode, rule) if z.requires_grad else y


class OpRule(Protocol):
    """One op's backward in one mode over the plain forward: called in place of the op with
    `call` (the op, or the next mode's rule at it), which it calls once on its arguments (tapped
    where it needs), and returns the output (tapped or replaced where it needs)."""

    def __call__(self, call: Callable[..., Any], hooks: Hooks, *args: Any, **kw: Any) -> Any: ...


def replacing(rule: BackwardRule) -> OpRule:
    """The op rule that sends rule(z, y, ∂R̄/∂y) straight to the op's first input z."""

    def op_rule(call: Callable[..., Any], hooks: Hooks, z: torch.Tensor, *rest: Any, **kw: Any) -> Any:
        return hooks.replace(call(z, *rest, **kw), z, rule)

    return op_rule


class _SharedOp(nn.Module):
    """The op, forward unchanged; every mode with a rule at it sets up its own backward there."""

    def __init__(self, inner: nn.Module, rules: list[tuple[OpRule, Hooks]]) -> None:
        super().__init__()
        self.inner, self.rules = inner, rules

    def forward(self, *args: Any, **kw: Any) -> Any:
        return self._call(0, *args, **kw)

    def _call(self, k: int, *args: Any, **kw: Any) -> Any:
        if k == len(self.rules):
            return self.inner(*args, **kw)
        rule, hooks = self.rules[k]
        return rule(functools.partial(self._call, k + 1), hooks, *args, **kw)


def _shared_pass(net: TorchNet, x: torch.Tensor, rules: dict[Hashable, Mapping[str, OpRule]],
                 on_output: Callable[[torch.Tensor], None] | None) -> dict[Hashable, torch.Tensor]:
    """One forward of the plain net, then one backward per mode (in the order of `rules`):
    mode -> ∂R̄/∂x with that mode's rules."""
    state = _Backward()
    per_op: dict[str, list[tuple[OpRule, Hooks]]] = {}
    for mode, ops in rules.items():
        hooks = Hooks(state, mode)
        for target, rule in ops.items():
            per_op.setdefault(target, []).append((rule, hooks))
    wrappers = {t: _SharedOp(net.module.get_submodule(t), r) for t, r in per_op.items()}
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
    references: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Maps of every method for the batch `x` (model-input space, same shape as x).

    `on_output` receives the encoder output of the first forward pass (the plain-gradient one when
    there is one), so features need no extra forward pass. `share_forward`: modes with
    `backward_rules` share one forward (False: a forward per mode, as a check or a baseline).
    `references`: per method name, the model input of the image its input is measured from (it
    combines x − reference with the gradient; `Preprocessing.constant_input` makes one); a method
    not named measures x from the model's own zero.
    """
    references = references or {}
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
            ref = references.get(m.name)
            maps[m.name] = m.combine(xi if ref is None else xi - ref, grad).detach()
    return maps
