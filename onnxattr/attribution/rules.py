"""LRP rules: one class per rule, whose forward of an op sets up a backward pass that carries
relevance instead of the gradient.
Longer than 600 lines because each rule keeps its two forms side by side (its own pass, and the
backward form that runs on the shared forward), so that they cannot drift apart.

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

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call

from ..errors import OnnxAttrError
from ..optypes import LINEAR, MULTIPLICATIVE
from ..registry import Registry
from .base import Hooks, OpRule, with_defaults


@dataclass(frozen=True)
class Site:
    """What a rule needs to know about the ONNX node it wraps."""

    op_type: str
    name: str
    gate: int | None = None  # index of the input known (statically) to be a gate, for Mul/Div
    nonnegative: bool = False  # the activation input is known (statically) to be >= 0


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + ε·sign(z) with sign(+0) = +1 as Zennit's `Stabilizer` (and sign(−0) = −1: two passes
    over z instead of four; relevance reaching an exact −0 output is 0 in practice). A fresh
    tensor, which callers may overwrite."""
    return torch.copysign(z.new_tensor(eps), z).add_(z)


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


def _divide(grad: torch.Tensor, denom: torch.Tensor, eps: float, dsign: int = 0,
            coef: float = 1.0) -> torch.Tensor:
    """coef · grad / stab(denom), stab with a known sign of `denom` (+1/−1) a plain ±ε."""
    stable = denom + dsign * eps if dsign else stabilize(denom, eps)
    q = torch.div(grad, stable, out=stable)  # its buffer: these passes are memory-bound
    return q.mul_(coef) if coef != 1.0 else q


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
            q = _divide(grad, denom, ctx.eps, dsign, coef)
            out += [q if s == 1 else s * q for s in signs]
            i += len(signs)
        return (None, None, None, *out)


def feed(x: torch.Tensor, value: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    """`value` in place of `x` in the forward; the gradient reaching `x` is scaled by `factor`
    (None: unscaled). ``feed(x, x.detach(), x.detach())`` is the x · ∂z/∂x of most rules."""
    return _Feed.apply(x, value, factor)


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


# --- a rule: one class, named, with parameters and the relevance pass for one op ---------------


class Rule(ABC):
    """A named LRP rule with parameters (one class per rule, as Zennit's rules).

    `forward(op, *args)` replaces the op's forward on the relevance pass: `op.inner` is the op,
    `op.site` what is known of its ONNX node, `op.cache` a dict the rule may keep per op (a rule
    instance serves every op its table gives it to). `wrap` puts an op under the rule.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    linear_only: ClassVar[bool] = False  # needs weights: only for Conv, ConvTranspose, Gemm, MatMul

    def __init__(self, **params: Any) -> None:
        self.params = with_defaults(f"LRP rule {self.name!r}", self.defaults, params)

    def wrap(self, module: nn.Module, site: Site) -> nn.Module | None:
        """The module that applies this rule to `module` (None: keep the op's own gradient)."""
        if self.linear_only and site.op_type not in LINEAR:
            raise OnnxAttrError(
                f"LRP rule {self.name!r} needs a linear op with weights (Conv, ConvTranspose, Gemm, "
                f"MatMul), not {site.op_type}; choose another rule for {site.op_type}"
            )
        return RuleModule(module, site, self)

    @abstractmethod
    def forward(self, op: RuleModule, *args: Any, **kw: Any) -> Any:
        """The op's output, set up so that its backward carries relevance."""

    def backward_form(self, site: Site) -> OpRule | None:
        """This rule over the op's plain forward (`base.OpRule`, relevance by taps in lrp's own
        backward), so that lrp shares the other methods' forward; None where the rule needs a
        forward of its own (modified weights, outputs cut from the graph)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and (self.name, self.params) == (other.name, other.params)

    def __hash__(self) -> int:
        return hash((self.name, repr(self.params)))


class RuleModule(nn.Module):
    """One op under a rule (swapped in for the relevance pass): its forward is the rule's."""

    def __init__(self, inner: nn.Module, site: Site, rule: Rule) -> None:
        super().__init__()
        self.inner, self.site, self.rule = inner, site, rule
        self.cache: dict[str, Any] = {}

    def forward(self, *args: Any, **kw: Any) -> Any:
        return self.rule.forward(self, *args, **kw)


#: Every LRP rule by name; rule tables and overrides name them.
RULES: Registry[type[Rule]] = Registry("LRP rule")


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make a :class:`Rule` subclass available by its ``name`` in rule tables,
    presets and overrides (``Conv = "myrule"``)."""
    return RULES.register(cls)


def _relevant(args: Sequence[Any], gate: int | None) -> tuple[list[int], int | None]:
    """The activation inputs that take relevance, and the gate cut off (of two activations)."""
    active = [i for i, a in enumerate(args) if _is_activation(a)]
    if gate is not None and len(active) == 2 and gate in active:
        active.remove(gate)
        return active, gate
    return active, None


def _coef(site: Site, n_active: int) -> float:
    """A product's relevance is split evenly between its activation inputs (uniform rule)."""
    return 1.0 / n_active if site.op_type in MULTIPLICATIVE else 1.0


def epsilon_forward(
    op: RuleModule, args: Sequence[Any], kw: dict[str, Any], eps: float, gate: int | None = None
) -> torch.Tensor:
    """R_i = x_i · ∂z/∂x_i · R / stab(z) for every activation input x_i (divided by their number
    for products, the uniform rule; input `gate` excluded); constants absorb the rest."""
    args = list(args)
    active, cut = _relevant(args, gate)
    if cut is not None:
        args[cut] = args[cut].detach()
    if not active:
        return op.inner(*args, **kw)
    for i in active:
        args[i] = feed(args[i], args[i].detach(), args[i].detach())
    z = op.inner(*args, **kw)
    return _route(z, [(_coef(op.site, len(active)), [1])], eps, [z])


@dataclass(frozen=True)
class EpsilonBackward:
    """`epsilon_forward` as taps over the op's plain forward (`base.OpRule`), so that lrp shares
    the other methods' forward: in lrp's backward each activation input's gradient is multiplied
    by the input (what `feed` does) and the output's divided by stab(z) (what `_route` does), the
    op's own vector-Jacobian product between them: the same float operations."""

    site: Site
    eps: float
    gated: bool = False  # the Gate rule: a product's gate (`_pick_gate`) takes no relevance

    def taps_inputs(self, hooks: Hooks, args: Sequence[Any]) -> tuple[list[Any], int]:
        """`args` with the relevant inputs tapped (a gate's cut), and how many there are."""
        args = list(args)
        active, cut = _relevant(args, _pick_gate(self.site, args) if self.gated else None)
        if cut is not None:
            args[cut] = hooks.tap(args[cut], _nothing)
        for i in active:
            args[i] = hooks.tap(args[i], functools.partial(torch.mul, other=args[i].detach()))
        return args, len(active)

    def taps_output(self, hooks: Hooks, z: torch.Tensor, n_active: int) -> torch.Tensor:
        return hooks.tap(z, functools.partial(_divide, denom=z.detach(), eps=self.eps,
                                              coef=_coef(self.site, n_active)))

    def __call__(self, call: Callable[..., Any], hooks: Hooks, *args: Any, **kw: Any) -> Any:
        args, n_active = self.taps_inputs(hooks, args)
        z = call(*args, **kw)
        return self.taps_output(hooks, z, n_active) if n_active else z

    def inputs_only(self, call: Callable[..., Any], hooks: Hooks, *args: Any, **kw: Any) -> Any:
        """The linear op of a Conv+BatchNormalization pair that lrp merges: the inputs' taps."""
        return call(*self.taps_inputs(hooks, args)[0], **kw)

    def output_only(self, call: Callable[..., Any], hooks: Hooks, *args: Any, **kw: Any) -> Any:
        """The BatchNormalization of a merged pair: the output's tap (one activation input: an
        nn Conv/Linear holds its weights)."""
        return self.taps_output(hooks, call(*args, **kw), 1)


def _nothing(grad: torch.Tensor) -> None:
    """A gate takes no relevance."""
    return None


def _pick_gate(site: Site, args: Sequence[Any]) -> int | None:
    """The gate of a product: the input marked statically, else the broadcast (smaller) one."""
    active = [i for i, a in enumerate(args) if _is_activation(a)]
    if site.gate is None and len(active) == 2:
        a, b = (args[i].numel() for i in active)
        return active[0] if a < b else active[1] if b < a else None
    return site.gate


@register_rule
class Epsilon(Rule):
    name = "epsilon"
    summary = "ε-rule: R_i = x_i ∂z/∂x_i · R/(z + ε sign z); constants (biases) absorb their share"
    defaults = {"epsilon": 1e-6}

    def forward(self, op: RuleModule, *args: Any, **kw: Any) -> torch.Tensor:
        return epsilon_forward(op, args, kw, float(self.params["epsilon"]))

    def backward_form(self, site: Site) -> EpsilonBackward:
        return EpsilonBackward(site, float(self.params["epsilon"]))


@register_rule
class Norm(Epsilon):
    name = "norm"
    summary = "ε-normalised proportional split (ε only a stabiliser; Zennit's Norm)"


@register_rule
class Gate(Rule):
    """Mul/Div of two activations: the gate takes no relevance; the other input takes R (up to the
    stabiliser). The gate is the input marked statically (a Sigmoid-like producer, or the divisor),
    else the broadcast one; with neither, both share R equally (uniform rule)."""

    name = "gate"
    summary = (
        "product of activations: the gate (sigmoid-like or broadcast input) takes no relevance"
    )
    defaults = {"stabilizer": 1e-6}

    def forward(self, op: RuleModule, *args: Any, **kw: Any) -> torch.Tensor:
        gate = _pick_gate(op.site, args)
        return epsilon_forward(op, args, kw, float(self.params["stabilizer"]), gate)

    def backward_form(self, site: Site) -> EpsilonBackward:
        return EpsilonBackward(site, float(self.params["stabilizer"]), gated=True)


@register_rule
class Pass(Rule):
    name = "pass"
    summary = "relevance passes unchanged (element-wise activations)"

    def forward(self, op: RuleModule, x: torch.Tensor, *rest: Any, **kw: Any) -> torch.Tensor:
        y = op.inner(x, *rest, **kw)
        if not _is_activation(x):
            return y
        _check_elementwise(op.site, x, y)
        return _PassGrad.apply(y, x)

    def backward_form(self, site: Site) -> OpRule:
        def op_rule(call: Callable[..., Any], hooks: Hooks, x: Any, *rest: Any, **kw: Any) -> Any:
            y = call(x, *rest, **kw)
            if not _is_activation(x):
                return y
            _check_elementwise(site, x, y)
            return hooks.replace(y, x, _unchanged)

        return op_rule


def _check_elementwise(site: Site, x: torch.Tensor, y: torch.Tensor) -> None:
    if y.shape != x.shape:
        raise OnnxAttrError(
            f"rule 'pass' on {site.op_type} node {site.name!r} needs an element-wise op "
            f"(input {tuple(x.shape)}, output {tuple(y.shape)}); choose another rule for "
            f"{site.op_type} (`onnxattr rules`)"
        )


def _unchanged(z: torch.Tensor, y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad


@register_rule
class Gradient(Rule):
    name = "gradient"
    summary = "the op's own gradient: by position (reshapes, slicing), winner takes all (MaxPool)"

    def wrap(self, module: nn.Module, site: Site) -> None:
        return None  # the op stays as it is

    def forward(self, op: RuleModule, *args: Any, **kw: Any) -> Any:
        return op.inner(*args, **kw)


@register_rule
class Constant(Rule):
    name = "constant"
    summary = "output treated as a constant: no relevance flows into the op (Softmax in attention)"

    def forward(self, op: RuleModule, *args: Any, **kw: Any) -> Any:
        y = op.inner(*args, **kw)
        return tuple(t.detach() for t in y) if isinstance(y, (tuple, list)) else y.detach()


# --- rules with modified weights, for linear ops with one activation input ---------------------

ParamMod = Callable[[torch.Tensor, bool], torch.Tensor]  # (tensor, is_bias) -> modified tensor
#: `call(mod, x)`: the op with parameters modified by `mod`, on `x` in place of its activation
ModifiedCall = Callable[[ParamMod, torch.Tensor], torch.Tensor]
Terms = tuple[list, list[torch.Tensor]]  # (groups, terms) for `_route`


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


def _split(x: torch.Tensor, nonnegative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x⁺ and x⁻ (None when x has no negative entries, the usual post-ReLU case)."""
    xd = x.detach()
    if nonnegative or bool(xd.min() >= 0):
        return xd, None
    return xd.clamp(min=0), xd.clamp(max=0)


class ModifiedRule(Rule):
    """A rule that evaluates the linear op with modified parameters: nn modules (Conv,
    ConvTranspose, Linear, Sequential(pad, conv)) through their parameters, onnx2torch's
    MatMul/Gemm through their constant inputs (Gemm's third input is the bias). A subclass gives
    `terms` (and `value` when the terms already hold the output). Modified tensors are cached per
    op; ops with two activation inputs (q·kᵀ) fall back to the ε-rule."""

    defaults = {"stabilizer": 1e-6}
    linear_only = True

    def forward(self, op: RuleModule, *args: Any, **kw: Any) -> torch.Tensor:
        args = list(args)
        eps = float(self.params["stabilizer"])
        active = [i for i, a in enumerate(args) if _is_activation(a)]
        if len(active) != 1:  # two activations (e.g. q·kᵀ): no weights to modify
            return epsilon_forward(op, args, kw, eps)
        (i,) = active
        x = args[i]
        groups, terms = self.terms(lambda mod, t: _modified_call(op, mod, args, kw, i, t), op, x)
        value = self.value(terms)
        if value is None:
            with torch.no_grad():
                value = op.inner(*args, **kw)
        return _route(value, groups, eps, terms)

    @abstractmethod
    def terms(self, call: ModifiedCall, op: RuleModule, x: torch.Tensor) -> Terms:
        """(groups, terms) for `_route`: terms are `call(mod, fed input)`, the op with parameters
        modified by `mod` applied to the fed input in place of the activation `x`."""

    def value(self, terms: list[torch.Tensor]) -> torch.Tensor | None:
        """The op's output when the terms already give it (saves a forward), else None."""
        return None


def _modified_call(
    op: RuleModule, mod: ParamMod, args: list, kw: dict[str, Any], i: int, x: torch.Tensor
) -> torch.Tensor:
    """The op with parameters modified by `mod`, applied to `x` in place of activation input i."""
    cache = op.cache
    if "params" not in cache:
        params = dict(op.inner.named_parameters())
        params.update((n, b) for n, b in op.inner.named_buffers() if n.endswith(("weight", "bias")))
        cache["params"] = params
    key = mod.__name__
    if cache["params"]:
        if key not in cache:
            cache[key] = {
                n: mod(t.detach(), n.endswith("bias")) for n, t in cache["params"].items()
            }
        new = list(args)
        new[i] = x
        return functional_call(op.inner, cache[key], tuple(new), kw)
    consts = tuple(j for j, a in enumerate(args) if j != i and isinstance(a, torch.Tensor))
    if key not in cache or any(cache[key][0][j] is not args[j] for j in consts):
        bias = {2} if op.site.op_type == "Gemm" else set()
        cache[key] = ({j: args[j] for j in consts}, {j: mod(args[j], j in bias) for j in consts})
    new = [cache[key][1].get(j, a) for j, a in enumerate(args)]
    new[i] = x
    return op.inner(*new, **kw)


@register_rule
class ZPlus(ModifiedRule):
    name = "zplus"
    summary = "z⁺-rule: positive contributions only (αβ with α=1, β=0)"

    def terms(self, call: ModifiedCall, op: RuleModule, x: torch.Tensor) -> Terms:
        xp, xn = _split(x, op.site.nonnegative)
        terms = [call(_pos, feed(x, xp, xp))]
        if xn is not None:
            terms.append(call(_neg_nobias, feed(x, xn, xn)))
        return [(1.0, [1] * len(terms), 1)], terms  # W⁺x⁺ + b⁺ + W⁻x⁻ >= 0


@register_rule
class AlphaBeta(ModifiedRule):
    name = "alpha_beta"
    summary = "αβ-rule: α·positive − β·negative contributions (α − β = 1)"
    defaults = {"alpha": 2.0, "beta": 1.0, "stabilizer": 1e-6}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        a, b = float(self.params["alpha"]), float(self.params["beta"])
        if a < 0 or b < 0 or abs(a - b - 1.0) > 1e-9:
            raise OnnxAttrError(
                f"alpha_beta needs alpha, beta >= 0 and alpha - beta = 1, got {a}, {b}"
            )

    def terms(self, call: ModifiedCall, op: RuleModule, x: torch.Tensor) -> Terms:
        xp, xn = _split(x, op.site.nonnegative)
        fp = feed(x, xp, xp)
        pos, neg = [call(_pos, fp)], [call(_neg, fp)]
        if xn is not None:
            fn = feed(x, xn, xn)
            pos.append(call(_neg_nobias, fn))
            neg.append(call(_pos_nobias, fn))
        alpha, beta = float(self.params["alpha"]), float(self.params["beta"])
        return [(alpha, [1] * len(pos), 1), (-beta, [1] * len(neg), -1)], pos + neg

    def value(self, terms: list[torch.Tensor]) -> torch.Tensor:
        # W⁺x⁺ + b⁺ + W⁻x⁻ + W⁻x⁺ + b⁻ + W⁺x⁻ = Wx + b
        return sum(t.detach() for t in terms[1:]) + terms[0].detach()


@register_rule
class Flat(ModifiedRule):
    name = "flat"
    summary = "flat rule: relevance spread uniformly over the receptive field (first layer)"
    mod: ClassVar[ParamMod] = staticmethod(_ones_nobias)

    def terms(self, call: ModifiedCall, op: RuleModule, x: torch.Tensor) -> Terms:
        ones = torch.ones_like(x.detach())
        return [(1.0, [1], 1)], [call(type(self).mod, feed(x, ones, None))]  # 1ᵀ|W'| >= 0


@register_rule
class WSquare(Flat):
    name = "wsquare"
    summary = "w²-rule: spread by squared weights (first layer, unbounded input)"
    mod: ClassVar[ParamMod] = staticmethod(_square)


@register_rule
class ZBox(ModifiedRule):
    name = "zbox"
    summary = "z^B-rule: input in [low, high] (first layer); bounds per channel, or each image's"
    defaults = {"low": None, "high": None, "stabilizer": 1e-6}

    @staticmethod
    def _bound(x: torch.Tensor, given: Sequence[float] | float | None, high: bool) -> torch.Tensor:
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

    def terms(self, call: ModifiedCall, op: RuleModule, x: torch.Tensor) -> Terms:
        xd = x.detach()
        low = self._bound(x, self.params["low"], False)
        high = self._bound(x, self.params["high"], True)
        terms = [
            call(_keep, feed(x, xd, xd)),
            call(_pos, feed(x, low, low)),
            call(_neg, feed(x, high, high)),
        ]
        return [(1.0, [1, -1, -1])], terms

    def value(self, terms: list[torch.Tensor]) -> torch.Tensor:
        return terms[0].detach()  # the op with unmodified weights on x


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
            f"(rules: {', '.join(RULES.list())})"
        )
    return RULES.get(name)(**params)
