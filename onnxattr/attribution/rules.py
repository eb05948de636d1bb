"""LRP rules: module wrappers whose backward pass carries relevance instead of the gradient.

Relevance travels as the "gradient" of the pass (as in Zennit): each wrapped op forwards exactly
the values of the original op and, in the backward pass, maps the relevance R of its output to the
relevance of its activation inputs. Inputs that do not depend on the model input (weights,
constants, outputs of ops treated as constant) take no relevance.

Linear rules need no extra backward pass: the relevance is routed through the vector-Jacobian
product of the op itself (or of the op with modified weights) by two autograd functions, `_Feed`
(scales the incoming gradient by the input) and `_Route` (divides by the stabilised output).
Weight modifications are computed once per wrapper, and terms for negative inputs are skipped when
the input has none (post-ReLU activations), so z⁺ costs one extra forward of the op, not three.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call

from ..errors import OnnxAttrError
from ..optypes import LINEAR, MULTIPLICATIVE


@dataclass(frozen=True)
class Site:
    """What a rule needs to know about the ONNX node it wraps."""

    op_type: str
    name: str
    gate: int | None = None  # index of the input known (statically) to be a gate, for Mul/Div
    nonnegative: bool = False  # the activation input is known (statically) to be >= 0


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + ε·sign(z) with sign(+0) = +1 as Zennit's `Stabilizer` (and sign(−0) = −1: two passes
    over z instead of four; relevance reaching an exact −0 output is 0 in practice)."""
    return z + torch.copysign(z.new_tensor(eps), z)


class _Feed(torch.autograd.Function):
    """Forward `value` in place of x; backward sends grad · `factor` (grad if None) to x."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, value: torch.Tensor, factor: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(factor)
        ctx.has_factor = factor is not None
        return value.view_as(value)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (factor,) = ctx.saved_tensors
        return (grad * factor if ctx.has_factor else grad), None, None


class _Route(torch.autograd.Function):
    """Forward `value`; backward gives term t of group (c, signs) c·s_t·R / stab(Σ s·terms).

    `groups` is a tuple of (coefficient, signs, sign of the sum) with one sign per term, in the
    order of `terms`. A known sign of the sum (+1/−1; 0: unknown) makes the stabiliser a plain
    ±ε: where the sum is 0 all its terms are, so the choice cannot matter.
    """

    @staticmethod
    def forward(
        ctx: Any, value: torch.Tensor, groups: tuple, eps: float, *terms: torch.Tensor
    ) -> torch.Tensor:
        ctx.groups, ctx.eps = groups, eps
        ctx.save_for_backward(*terms)
        return value.view_as(value)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        terms = ctx.saved_tensors
        out: list[torch.Tensor] = []
        i = 0
        for coef, signs, dsign in ctx.groups:
            group = terms[i : i + len(signs)]
            denom = group[0] if signs == (1,) else sum(s * t for s, t in zip(signs, group))
            q = grad / (denom + dsign * ctx.eps if dsign else stabilize(denom, ctx.eps))
            if coef != 1.0:
                q = q * coef
            out += [q if s == 1 else s * q for s in signs]
            i += len(signs)
        return (None, None, None, *out)


def _route(
    value: torch.Tensor, groups: Sequence[tuple], eps: float, terms: Sequence[torch.Tensor]
) -> torch.Tensor:
    """`groups`: (coefficient, signs) or (coefficient, signs, sign of their sum)."""
    groups_t = tuple((float(g[0]), tuple(g[1]), int(g[2]) if len(g) > 2 else 0) for g in groups)
    return _Route.apply(value.detach(), groups_t, eps, *terms)


class _PassGrad(torch.autograd.Function):
    """Forward y; backward hands R of y unchanged to x (element-wise ops: same shape)."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad


def _is_activation(a: Any) -> bool:
    return isinstance(a, torch.Tensor) and a.requires_grad and a.is_floating_point()


class RuleModule(nn.Module):
    """Wraps one op; subclasses define the forward that sets up the relevance backward."""

    def __init__(self, inner: nn.Module, site: Site) -> None:
        super().__init__()
        self.inner = inner
        self.site = site


class _Pass(RuleModule):
    def forward(self, x: torch.Tensor, *rest: Any, **kw: Any) -> torch.Tensor:
        y = self.inner(x, *rest, **kw)
        if not _is_activation(x):
            return y
        if y.shape != x.shape:
            raise OnnxAttrError(
                f"rule 'pass' on {self.site.op_type} node {self.site.name!r} needs an element-wise op "
                f"(input {tuple(x.shape)}, output {tuple(y.shape)}); choose another rule for "
                f"{self.site.op_type} (`onnxattr rules`)"
            )
        return _PassGrad.apply(y, x)


class _Constant(RuleModule):
    def forward(self, *args: Any, **kw: Any) -> Any:
        y = self.inner(*args, **kw)
        return tuple(t.detach() for t in y) if isinstance(y, (tuple, list)) else y.detach()


class _Epsilon(RuleModule):
    """R_i = x_i · ∂z/∂x_i · R / stab(z) for every activation input x_i (divided by their number
    for products, the uniform rule); constants absorb the rest."""

    def __init__(self, inner: nn.Module, site: Site, eps: float, gate: int | None = None) -> None:
        super().__init__(inner, site)
        self.eps = eps
        self.gate = gate

    def forward(self, *args: Any, **kw: Any) -> torch.Tensor:
        args = list(args)
        active = [i for i, a in enumerate(args) if _is_activation(a)]
        if self.gate is not None and len(active) == 2 and self.gate in active:
            args[self.gate] = args[self.gate].detach()
            active.remove(self.gate)
        if not active:
            return self.inner(*args, **kw)
        for i in active:
            args[i] = _Feed.apply(args[i], args[i].detach(), args[i].detach())
        z = self.inner(*args, **kw)
        coef = 1.0 / len(active) if self.site.op_type in MULTIPLICATIVE else 1.0
        return _route(z, [(coef, [1])], self.eps, [z])


class _Gate(_Epsilon):
    """Mul/Div of two activations: the gate takes no relevance; the other input takes R (up to the
    stabiliser). The gate is the input marked statically (a Sigmoid-like producer, or the divisor),
    else the broadcast one; with neither, both share R equally (uniform rule)."""

    def forward(self, *args: Any, **kw: Any) -> torch.Tensor:
        self.gate = self.site.gate
        active = [i for i, a in enumerate(args) if _is_activation(a)]
        if self.gate is None and len(active) == 2:
            a, b = (args[i].numel() for i in active)
            self.gate = active[0] if a < b else active[1] if b < a else None
        return super().forward(*args, **kw)


# --- rules with modified weights, for linear ops with one activation input ---------------------

ParamMod = Callable[[torch.Tensor, bool], torch.Tensor]  # (tensor, is_bias) -> modified tensor


def _keep(t: torch.Tensor, bias: bool) -> torch.Tensor:
    return t


def _pos(t: torch.Tensor, bias: bool) -> torch.Tensor:
    return t.clamp(min=0)


def _neg(t: torch.Tensor, bias: bool) -> torch.Tensor:
    return t.clamp(max=0)


def _pos_nobias(t: torch.Tensor, bias: bool) -> torch.Tensor:
    return torch.zeros_like(t) if bias else t.clamp(min=0)


def _neg_nobias(t: torch.Tensor, bias: bool) -> torch.Tensor:
    return torch.zeros_like(t) if bias else t.clamp(max=0)


def _ones_nobias(t: torch.Tensor, bias: bool) -> torch.Tensor:
    return torch.zeros_like(t) if bias else torch.ones_like(t)


def _square(t: torch.Tensor, bias: bool) -> torch.Tensor:
    return t * t


class _Modified(RuleModule):
    """A linear op evaluated with modified parameters: nn modules (Conv, ConvTranspose, Linear,
    Sequential(pad, conv)) through their parameters, onnx2torch's MatMul/Gemm through their
    constant inputs (Gemm's third input is the bias). Modified tensors are cached."""

    def __init__(self, inner: nn.Module, site: Site, stabilizer: float) -> None:
        super().__init__(inner, site)
        self.stabilizer = stabilizer
        self._cache: dict[str, Any] = {}
        self._params = dict(inner.named_parameters())
        self._params.update(
            (n, b) for n, b in inner.named_buffers() if n.endswith(("weight", "bias"))
        )
        self._fallback = _Epsilon(inner, site, stabilizer)
        self._kw: dict[str, Any] = {}

    def call(self, mod: ParamMod, args: list, i: int, x: torch.Tensor) -> torch.Tensor:
        """The op with parameters modified by `mod`, applied to `x` in place of activation input i."""
        key = mod.__name__
        if self._params:
            if key not in self._cache:
                self._cache[key] = {
                    n: mod(t.detach(), n.endswith("bias")) for n, t in self._params.items()
                }
            new = list(args)
            new[i] = x
            return functional_call(self.inner, self._cache[key], tuple(new), self._kw)
        consts = tuple(j for j, a in enumerate(args) if j != i and isinstance(a, torch.Tensor))
        if key not in self._cache or any(self._cache[key][0][j] is not args[j] for j in consts):
            bias = {2} if self.site.op_type == "Gemm" else set()
            self._cache[key] = (
                {j: args[j] for j in consts},
                {j: mod(args[j], j in bias) for j in consts},
            )
        new = [self._cache[key][1].get(j, a) for j, a in enumerate(args)]
        new[i] = x
        return self.inner(*new, **self._kw)

    def forward(self, *args: Any, **kw: Any) -> torch.Tensor:
        args = list(args)
        active = [i for i, a in enumerate(args) if _is_activation(a)]
        if len(active) != 1:  # two activations (e.g. q·kᵀ): no weights to modify
            return self._fallback(*args, **kw)
        (i,) = active
        x = args[i]
        self._kw = kw
        groups, terms = self.terms(args, i, x)
        value = self.value(terms)
        if value is None:
            with torch.no_grad():
                value = self.inner(*args, **kw)
        return _route(value, groups, self.stabilizer, terms)

    def terms(self, args: list, i: int, x: torch.Tensor) -> tuple[list, list[torch.Tensor]]:
        """(groups, terms) for `_route`; terms are outputs of the op on fed inputs."""
        raise NotImplementedError

    def value(self, terms: list[torch.Tensor]) -> torch.Tensor | None:
        """The op's output when the terms already give it (saves a forward), else None."""
        return None


def _split(x: torch.Tensor, nonnegative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x⁺ and x⁻ (None when x has no negative entries, the usual post-ReLU case)."""
    xd = x.detach()
    if nonnegative or bool(xd.min() >= 0):
        return xd, None
    return xd.clamp(min=0), xd.clamp(max=0)


class _ZPlus(_Modified):
    def terms(self, args: list, i: int, x: torch.Tensor) -> tuple[list, list[torch.Tensor]]:
        xp, xn = _split(x, self.site.nonnegative)
        terms = [self.call(_pos, args, i, _Feed.apply(x, xp, xp))]
        if xn is not None:
            terms.append(self.call(_neg_nobias, args, i, _Feed.apply(x, xn, xn)))
        return [(1.0, [1] * len(terms), 1)], terms  # W⁺x⁺ + b⁺ + W⁻x⁻ >= 0


class _AlphaBeta(_Modified):
    def __init__(
        self, inner: nn.Module, site: Site, stabilizer: float, alpha: float, beta: float
    ) -> None:
        super().__init__(inner, site, stabilizer)
        self.alpha, self.beta = alpha, beta

    def terms(self, args: list, i: int, x: torch.Tensor) -> tuple[list, list[torch.Tensor]]:
        xp, xn = _split(x, self.site.nonnegative)
        fp = _Feed.apply(x, xp, xp)
        pos, neg = [self.call(_pos, args, i, fp)], [self.call(_neg, args, i, fp)]
        if xn is not None:
            fn = _Feed.apply(x, xn, xn)
            pos.append(self.call(_neg_nobias, args, i, fn))
            neg.append(self.call(_pos_nobias, args, i, fn))
        groups = [(self.alpha, [1] * len(pos), 1), (-self.beta, [1] * len(neg), -1)]
        return groups, pos + neg

    def value(self, terms: list[torch.Tensor]) -> torch.Tensor:
        # W⁺x⁺ + b⁺ + W⁻x⁻ + W⁻x⁺ + b⁻ + W⁺x⁻ = Wx + b
        return sum(t.detach() for t in terms[1:]) + terms[0].detach()


class _Flat(_Modified):
    mod: ClassVar[ParamMod] = staticmethod(_ones_nobias)

    def terms(self, args: list, i: int, x: torch.Tensor) -> tuple[list, list[torch.Tensor]]:
        ones = torch.ones_like(x.detach())
        return [(1.0, [1], 1)], [
            self.call(type(self).mod, args, i, _Feed.apply(x, ones, None))
        ]  # 1ᵀ|W'| >= 0


class _WSquare(_Flat):
    mod: ClassVar[ParamMod] = staticmethod(_square)


class _ZBox(_Modified):
    def __init__(
        self,
        inner: nn.Module,
        site: Site,
        stabilizer: float,
        low: Sequence[float] | float | None,
        high: Sequence[float] | float | None,
    ) -> None:
        super().__init__(inner, site, stabilizer)
        self.low, self.high = low, high

    def _bound(
        self, x: torch.Tensor, given: Sequence[float] | float | None, high: bool
    ) -> torch.Tensor:
        """The bound as a tensor broadcast to x: per channel (dim 1) when a list; when not given,
        each image's extreme per channel (per image for (N, features) inputs), so that a map does
        not depend on the other images of its batch."""
        xd = x.detach()
        if given is None:
            dims = list(range(2, xd.dim())) if xd.dim() > 2 else [1]
            b = xd.amax(dim=dims, keepdim=True) if high else xd.amin(dim=dims, keepdim=True)
        else:
            b = torch.as_tensor(given, dtype=xd.dtype, device=xd.device)
            if b.dim() == 1:
                b = b.view(1, -1, *([1] * (xd.dim() - 2)))
        return b.expand_as(xd).contiguous()

    def terms(self, args: list, i: int, x: torch.Tensor) -> tuple[list, list[torch.Tensor]]:
        xd = x.detach()
        low, high = self._bound(x, self.low, False), self._bound(x, self.high, True)
        terms = [
            self.call(_keep, args, i, _Feed.apply(x, xd, xd)),
            self.call(_pos, args, i, _Feed.apply(x, low, low)),
            self.call(_neg, args, i, _Feed.apply(x, high, high)),
        ]
        return [(1.0, [1, -1, -1])], terms

    def value(self, terms: list[torch.Tensor]) -> torch.Tensor:
        return terms[0].detach()  # the op with unmodified weights on x


# --- the rules users name in the table ---------------------------------------------------------


class Rule(ABC):
    """A named LRP rule with parameters; `wrap` returns the module that applies it to one op."""

    name: ClassVar[str]
    summary: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    linear_only: ClassVar[bool] = False  # needs weights: only for Conv, ConvTranspose, Gemm, MatMul

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise OnnxAttrError(
                f"LRP rule {self.name!r} takes no parameter {', '.join(sorted(unknown))}; "
                f"it takes: {', '.join(self.defaults) or 'none'}"
            )
        self.params = {**self.defaults, **params}

    def wrap(self, module: nn.Module, site: Site) -> nn.Module | None:
        """The replacement module, or None to keep the op's own gradient."""
        if self.linear_only and site.op_type not in LINEAR:
            raise OnnxAttrError(
                f"LRP rule {self.name!r} needs a linear op with weights (Conv, ConvTranspose, Gemm, "
                f"MatMul), not {site.op_type}; choose another rule for {site.op_type}"
            )
        return self._wrap(module, site)

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and (self.name, self.params) == (other.name, other.params)

    def __hash__(self) -> int:
        return hash((self.name, repr(self.params)))


#: Every LRP rule by name; rule tables and overrides name them.
RULES: dict[str, type[Rule]] = {}


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make a :class:`Rule` subclass available by its ``name`` in rule tables,
    presets and overrides (``Conv = "myrule"``)."""
    RULES[cls.name] = cls
    return cls


@register_rule
class Epsilon(Rule):
    name = "epsilon"
    summary = "ε-rule: R_i = x_i ∂z/∂x_i · R/(z + ε sign z); constants (biases) absorb their share"
    defaults = {"epsilon": 1e-6}

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module:
        return _Epsilon(module, site, float(self.params["epsilon"]))


@register_rule
class Norm(Epsilon):
    name = "norm"
    summary = "ε-normalised proportional split (ε only a stabiliser; Zennit's Norm)"


@register_rule
class ZPlus(Rule):
    name = "zplus"
    summary = "z⁺-rule: positive contributions only (αβ with α=1, β=0)"
    defaults = {"stabilizer": 1e-6}
    linear_only = True

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module:
        return _ZPlus(module, site, float(self.params["stabilizer"]))


@register_rule
class AlphaBeta(Rule):
    name = "alpha_beta"
    summary = "αβ-rule: α·positive − β·negative contributions (α − β = 1)"
    defaults = {"alpha": 2.0, "beta": 1.0, "stabilizer": 1e-6}
    linear_only = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        a, b = float(self.params["alpha"]), float(self.params["beta"])
        if a < 0 or b < 0 or abs(a - b - 1.0) > 1e-9:
            raise OnnxAttrError(
                f"alpha_beta needs alpha, beta >= 0 and alpha - beta = 1, got {a}, {b}"
            )

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module:
        p = self.params
        return _AlphaBeta(module, site, float(p["stabilizer"]), float(p["alpha"]), float(p["beta"]))


@register_rule
class Flat(Rule):
    name = "flat"
    summary = "flat rule: relevance spread uniformly over the receptive field (first layer)"
    defaults = {"stabilizer": 1e-6}
    linear_only = True

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module:
        return _Flat(module, site, float(self.params["stabilizer"]))


@register_rule
class WSquare(Rule):
    name = "wsquare"
    summary = "w²-rule: spread by squared weights (first layer, unbounded input)"
    defaults = {"stabilizer": 1e-6}
    linear_only = True

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module:
        return _WSquare(module, site, float(self.params["stabilizer"]))


@register_rule
class ZBox(Rule):
    name = "zbox"
    summary = "z^B-rule: input in [low, high] (first layer); bounds per channel, or each image's"
    defaults = {"low": None, "high": None, "stabilizer": 1e-6}
    linear_only = True

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module:
        p = self.params
        return _ZBox(module, site, float(p["stabilizer"]), p["low"], p["high"])


@register_rule
class Pass(Rule):
    name = "pass"
    summary = "relevance passes unchanged (element-wise activations)"

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module:
        return _Pass(module, site)


@register_rule
class Gradient(Rule):
    name = "gradient"
    summary = "the op's own gradient: by position (reshapes, slicing), winner takes all (MaxPool)"

    def _wrap(self, module: nn.Module, site: Site) -> None:
        return None


@register_rule
class Gate(Rule):
    name = "gate"
    summary = (
        "product of activations: the gate (sigmoid-like or broadcast input) takes no relevance"
    )
    defaults = {"stabilizer": 1e-6}

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module:
        return _Gate(module, site, float(self.params["stabilizer"]))


@register_rule
class Constant(Rule):
    name = "constant"
    summary = "output treated as a constant: no relevance flows into the op (Softmax in attention)"

    def _wrap(self, module: nn.Module, site: Site) -> nn.Module:
        return _Constant(module, site)


def make_rule(spec: Rule | str | dict[str, Any]) -> Rule:
    """A rule from a name ("zplus"), a mapping ({"rule": "epsilon", "epsilon": 0.25}) or a Rule."""
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("rule"), str):
        params = dict(spec)
        name = params.pop("rule")
    else:
        raise OnnxAttrError(
            f"cannot read LRP rule {spec!r}: give a rule name or a table with key 'rule' "
            f"(rules: {', '.join(sorted(RULES))})"
        )
    if name not in RULES:
        raise OnnxAttrError(f"unknown LRP rule {name!r}; rules: {', '.join(sorted(RULES))}")
    return RULES[name](**params)
