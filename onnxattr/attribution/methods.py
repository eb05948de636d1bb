"""The paper's three methods: saliency, gradient×input and ε-LRP (DeepExplain's formulation)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import OnnxAttrError
from ..onnxgraph.convert import TorchNet
from ..optypes import ELRP_NONLINEARITIES
from .base import AttributionMethod, OpRule, register_method, replacing
from .patching import swapped


@register_method
class Saliency(AttributionMethod):
    """|∂R̄/∂x| (Simonyan et al., 2014)."""

    name = "saliency"

    def combine(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.abs()


#: Where input×gradient methods measure their input from, as a probe pixel value in every channel
#: (None: the model's own zero, x as its preprocessing makes it). x·∂R̄/∂x then depends on each
#: model's normalisation: its zero is mid-gray for ImageNet and [-1, 1] inputs but black for
#: [0, 1] and [0, 255] ones, so two models that compute the same function of the probe image get
#: different maps. "gray" and "black" measure every model's input from the same probe image, so
#: (x − r)·∂R̄/∂x is the same for any preprocessing that computes the same function of the pixels.
REFERENCES: dict[str, float | None] = {"model": None, "gray": 127.5, "black": 0.0}


class _TimesInput(AttributionMethod):
    """A method that multiplies its gradient by the input, measured from `reference`."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["reference"] not in REFERENCES:
            raise OnnxAttrError(f"{self.name}: reference {self.params['reference']!r} is not one "
                                f"of {', '.join(REFERENCES)}")

    def reference_pixel(self) -> float | None:
        return REFERENCES[self.params["reference"]]

    def combine(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return x * grad


@register_method
class GradientInput(_TimesInput):
    """(x − r) · ∂R̄/∂x (Shrikumar et al., 2016), r per `reference` (model, gray or black)."""

    name = "grad_input"
    defaults = {"reference": "gray"}


def _ratio(z: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    """grad · y / (z + ε·sign z), sign(0) = +1: what ε-LRP sends back through y = f(z).

    In one buffer, ±ε as mask·2ε − ε (exact in binary floating point): these element-wise passes
    over large activations are memory-bound, and `torch.where` with scalars and a fresh tensor per
    step cost twice the arithmetic (elrp 2.6× grad_input on mobilenet_v2). Same values. The mask
    is written as floats by the comparison itself (a bool mask then `.to` was one more pass: 4 %
    of efficientnet_lite0's attribution).
    """
    mask = torch.empty_like(z, dtype=torch.get_default_dtype())
    sign_eps = torch.ge(z, 0, out=mask).mul_(2 * eps).sub_(eps)  # ε as where() had it
    out = sign_eps.to(torch.promote_types(z.dtype, sign_eps.dtype)).add_(z)
    return torch.div(y, out, out=out).mul_(grad)


class _Ratio(torch.autograd.Function):
    """Forward y; backward sends grad · y / (z + ε·sign z) to z, computed only then (as four
    element-wise ops at forward time it made elrp 1.5× grad_input on ResNet-50)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.eps = eps
        ctx.save_for_backward(z, y)
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        z, y = ctx.saved_tensors
        return _ratio(z, y, grad, ctx.eps), None, None


class _RatioGradient(nn.Module):
    """f(z) forward; backward uses f(z) / (z + ε·sign(z)) in place of f'(z), sign(0) = +1."""

    def __init__(self, inner: nn.Module, eps: float) -> None:
        super().__init__()
        self.inner = inner
        self.eps = eps

    def forward(self, z: torch.Tensor, *rest: Any) -> torch.Tensor:
        with torch.no_grad():
            y = self.inner(z, *rest)
        return _Ratio.apply(z, y, self.eps) if z.requires_grad else y


@register_method
class EpsilonLRP(_TimesInput):
    """ε-LRP as the paper's implementation computes it (DeepExplain; Ancona et al., ICLR 2018).

    Linear ops keep their gradient; every element-wise nonlinearity passes f(z)/(z + ε·sign z); the
    result is multiplied by x − r, r per `reference` as for grad_input. On ReLU networks it tends
    to gradient×input as ε → 0.
    """

    name = "elrp"
    defaults = {"epsilon": 1e-4, "reference": "gray"}

    def mode(self) -> Hashable:
        return ("elrp", self.params["epsilon"])

    @contextlib.contextmanager
    def backward_context(self, net: TorchNet) -> Iterator[None]:
        eps = float(self.params["epsilon"])
        wrappers = {t: _RatioGradient(m, eps) for t, m in net.modules_of_type(ELRP_NONLINEARITIES)}
        with swapped(net.module, wrappers):
            yield

    def backward_rules(self, net: TorchNet) -> Mapping[str, OpRule]:
        """The same ratio at the same ops as `backward_context`: elrp's forward is the plain one."""
        rule = replacing(functools.partial(_ratio, eps=float(self.params["epsilon"])))
        return {t: rule for t, _ in net.modules_of_type(ELRP_NONLINEARITIES)}
