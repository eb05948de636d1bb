"""Attribution methods: a name-keyed registry and the batched forward-backward pass they share.

Every method explains R̄, the mean over all units of the encoder output, per image. A method is a
backward *mode* (plain gradient, or gradients modified per op while a context is active) plus a
function of (x, ∂R̄/∂x). Methods with the same mode share one forward-backward pass.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch

from ..errors import OnnxAttrError
from ..onnxgraph.convert import TorchNet
from ..registry import Registry

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

    @abstractmethod
    def combine(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The map in model-input space from the input and the (possibly modified) gradient."""


def encoder_mean(output: torch.Tensor) -> torch.Tensor:
    """R̄ per image: the mean over all units of the encoder output."""
    return output.flatten(1).mean(1)


def attribute(
    net: TorchNet,
    x: torch.Tensor,
    methods: Iterable[AttributionMethod],
    on_output: Callable[[torch.Tensor], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Maps of every method for the batch `x` (model-input space, same shape as x).

    `on_output` receives the encoder output of the plain-gradient pass (or of the first pass when
    none is plain), so features need no extra forward pass.
    """
    groups: dict[Hashable, list[AttributionMethod]] = {}
    for m in methods:
        groups.setdefault(m.mode(), []).append(m)
    ordered = sorted(groups.items(), key=lambda kv: kv[0] != "gradient")
    maps: dict[str, torch.Tensor] = {}
    for i, (_, group) in enumerate(ordered):
        xi = x.detach().clone().requires_grad_(True)
        with group[0].backward_context(net):
            out = net(xi)
            if i == 0 and on_output is not None:
                on_output(out.detach())
            (grad,) = torch.autograd.grad(encoder_mean(out).sum(), xi)
        for m in group:
            maps[m.name] = m.combine(xi.detach(), grad).detach()
    return maps
