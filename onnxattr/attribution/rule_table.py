"""The LRP rule table: which rule each ONNX op type gets, named presets, and user overrides.

Besides ONNX op types, a table has three special entries:
  first    the rule for the linear op(s) nearest the input (Conv, ConvTranspose, Gemm, MatMul
           reached from the input without passing another linear op);
  input    the rule for element-wise ops with a constant operand before those (input
           normalisation baked into the graph, x·s − m): "pass" reports relevance at the pixels;
  default  the rule for op types the table does not list (none: such an op type is an error).

Overrides come from a TOML file or a Python mapping of the same shape, e.g.
    Conv = "zplus"
    Gemm = { rule = "epsilon", epsilon = 0.25 }
    first = { rule = "zbox", low = -2.12, high = 2.64 }
    default = "gradient"
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._compat import tomllib
from ..errors import OnnxAttrError
from ..optypes import BY_POSITION, LINEAR_OPS, LRP_PASS
from ..registry import Registry
from .rules import Rule, make_rule

SPECIAL = ("first", "input", "default")



@dataclass(frozen=True)
class Preset:
    build: Callable[[float], dict[str, Any]]  # (epsilon) -> table mapping
    epsilon: float  # default ε of the ε-rule
    summary: str


#: Every rule preset by name (`--lrp-preset`), in registration order.
PRESETS: Registry[Preset] = Registry("LRP preset")


def register_preset(name: str, *, epsilon: float, summary: str
                    ) -> Callable[[Callable[[float], dict[str, Any]]], Callable[[float], dict[str, Any]]]:
    """Decorator: register ``build(eps) -> table`` as preset ``name`` with default ε ``epsilon``
    (the table maps op types and the special entries to rules; :func:`base_table` holds what every
    built-in preset shares)."""

    def decorate(build: Callable[[float], dict[str, Any]]) -> Callable[[float], dict[str, Any]]:
        PRESETS.add(name, Preset(build, epsilon, summary))
        return build

    return decorate


def base_table(eps: float) -> dict[str, Any]:
    """Entries shared by every built-in preset; `eps` is the ε of the linear ops' ε-rule."""
    table: dict[str, Any] = {op: "pass" for op in LRP_PASS}
    table.update({op: "gradient" for op in BY_POSITION})
    table.update(
        {
            "BatchNormalization": {"rule": "epsilon", "epsilon": eps},  # when not merged
            "Add": "norm", "Sum": "norm", "Sub": "norm",
            "Mul": "gate", "Div": "gate",
            "MaxPool": "gradient", "GlobalMaxPool": "gradient",
            "AveragePool": "norm", "GlobalAveragePool": "norm", "ReduceMean": "norm",
            "ReduceSum": "norm",
            "Softmax": "constant",
            "LayerNormalization": "pass",  # identity rule (AttnLRP): the normalisation is not a source
            "input": "pass",
        }
    )  # fmt: skip
    return table


@register_preset("epsilon", epsilon=1e-4,
                 summary="the paper's ε-LRP: ε-rule on every linear op (ε = 1e-4 as DeepExplain)")
def _epsilon(eps: float) -> dict[str, Any]:
    spec = {"rule": "epsilon", "epsilon": eps}
    return {**base_table(eps), **{op: spec for op in LINEAR_OPS}, "first": spec}


@register_preset("epsilon_plus_flat", epsilon=1e-6,
                 summary="as Zennit's EpsilonPlusFlat: z⁺ on convolutions, ε on Gemm/MatMul, "
                         "flat first layer")
def _epsilon_plus_flat(eps: float) -> dict[str, Any]:
    spec = {"rule": "epsilon", "epsilon": eps}
    return {**base_table(eps), "Conv": "zplus", "ConvTranspose": "zplus", "Gemm": spec,
            "MatMul": spec, "first": "flat"}  # fmt: skip


@register_preset("epsilon_alpha2_beta1_flat", epsilon=1e-6,
                 summary="as Zennit's EpsilonAlpha2Beta1Flat: αβ(2,1) on convolutions, ε on "
                         "Gemm/MatMul, flat first layer")
def _epsilon_alpha2_beta1_flat(eps: float) -> dict[str, Any]:
    spec = {"rule": "epsilon", "epsilon": eps}
    ab = {"rule": "alpha_beta", "alpha": 2.0, "beta": 1.0}
    return {**base_table(eps), "Conv": ab, "ConvTranspose": ab, "Gemm": spec, "MatMul": spec,
            "first": "flat"}  # fmt: skip


@register_preset("alpha2_beta1", epsilon=1e-6,
                 summary="αβ(2,1) on every linear op, the first layer included")
def _alpha2_beta1(eps: float) -> dict[str, Any]:
    ab = {"rule": "alpha_beta", "alpha": 2.0, "beta": 1.0}
    return {**base_table(eps), **{op: ab for op in LINEAR_OPS}, "first": ab}


@dataclass(frozen=True)
class RuleTable:
    """Rules by ONNX op type plus the special entries (see the module docstring)."""

    rules: dict[str, Rule]
    first: Rule
    input: Rule
    default: Rule | None = None
    origin: str = ""
    overridden: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], origin: str = "") -> RuleTable:
        rules = {k: _rule(k, v) for k, v in mapping.items() if k not in SPECIAL}
        missing = [k for k in ("first", "input") if k not in mapping]
        if missing:
            raise OnnxAttrError(f"rule table {origin!r} lacks the entries {', '.join(missing)}")
        default = mapping.get("default")
        return cls(
            rules=rules,
            first=_rule("first", mapping["first"]),
            input=_rule("input", mapping["input"]),
            default=None if default is None else _rule("default", default),
            origin=origin,
        )

    def overridden_by(self, overrides: Mapping[str, Any], origin: str) -> RuleTable:
        """This table with some entries replaced (op types or special entries)."""
        new = {k: _rule(k, v) for k, v in overrides.items()}
        return replace(
            self,
            rules={**self.rules, **{k: v for k, v in new.items() if k not in SPECIAL}},
            first=new.get("first", self.first),
            input=new.get("input", self.input),
            default=new.get("default", self.default),
            origin=f"{self.origin} + {origin}",
            overridden=self.overridden | set(new),
        )

    def rule_for(self, op_type: str) -> Rule | None:
        return self.rules.get(op_type, self.default)

    def check(self, op_types: Iterable[str]) -> None:
        """Raise naming every op type that has no rule (and no default)."""
        missing = sorted({t for t in op_types if self.rule_for(t) is None})
        if missing:
            raise OnnxAttrError(
                f"no LRP rule for op type(s) {', '.join(missing)} (table: {self.origin}); add them "
                'to a rules override (e.g. `Foo = "gradient"`, or `default = "gradient"`) '
                "and pass it as the lrp method's `rules` parameter"
            )

    def rows(self) -> list[tuple[str, str]]:
        """(entry, rule) pairs for display: special entries first, then op types alphabetically."""
        special = [("first", self.first), ("input", self.input)]
        if self.default is not None:
            special.append(("default", self.default))
        return [(k, repr(r)) for k, r in special] + [
            (k, repr(self.rules[k])) for k in sorted(self.rules)
        ]


def _rule(key: str, spec: Any) -> Rule:
    try:
        return make_rule(spec)
    except OnnxAttrError as exc:
        raise OnnxAttrError(f"rule table entry {key!r}: {exc}") from None


def load_overrides(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Overrides from a TOML file path or a mapping; returns (mapping, description of origin)."""
    if isinstance(source, Mapping):
        return dict(source), "overrides"
    path = Path(source)
    try:
        with path.open("rb") as f:
            return tomllib.load(f), str(path)
    except FileNotFoundError:
        raise OnnxAttrError(f"LRP rules file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise OnnxAttrError(f"LRP rules file {path} is not valid TOML: {exc}") from None


def build_table(
    preset: str = "epsilon",
    epsilon: float | None = None,
    overrides: str | Path | Mapping[str, Any] | None = None,
) -> RuleTable:
    """The table of a named preset (ε defaulting to the preset's), with optional overrides."""
    p = PRESETS.get(preset)
    table = RuleTable.from_mapping(
        p.build(p.epsilon if epsilon is None else float(epsilon)), preset
    )
    if overrides is not None:
        mapping, origin = load_overrides(overrides)
        table = table.overridden_by(mapping, origin)
    return table
