"""One registry idiom: every extension point answers an unknown name with the same error, both
through its registry and through the public call that takes the name."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from onnxattr.analysis.estimators import ESTIMATORS, available_estimators, compute_affinity
from onnxattr.attribution import METHODS, PRESETS, RULES, get_method
from onnxattr.attribution.rule_table import build_table
from onnxattr.attribution.rules import make_rule
from onnxattr.errors import OnnxAttrError
from onnxattr.onnxgraph.fixups import FIXUPS
from onnxattr.registry import Registry
from onnxattr.transfer.estimates import ESTIMATES, get_estimate

SHAPE = r"unknown {kind} '{name}';( did you mean '[^']+'\?)? available: [\w, -]+$"

CASES = [
    pytest.param(METHODS, "attribution method", "salency", get_method, id="method"),
    pytest.param(RULES, "LRP rule", "zplsu", make_rule, id="rule"),
    pytest.param(PRESETS, "LRP preset", "epsilom", build_table, id="preset"),
    pytest.param(FIXUPS, "fix-up", "reshap", None, id="fixup"),
    pytest.param(ESTIMATORS, "estimator", "svca", None, id="estimator"),
    pytest.param(ESTIMATES, "estimate", "hscor", get_estimate, id="label-based estimate"),
]


@pytest.mark.parametrize(("registry", "kind", "typo", "public"), CASES)
def test_unknown_name_one_error_shape(
    registry: Registry, kind: str, typo: str, public: Callable[[str], object] | None
) -> None:
    calls = [registry.get] + ([public] if public else [])
    for call in calls:
        with pytest.raises(OnnxAttrError) as err:
            call(typo)
        msg = str(err.value)
        assert re.match(SHAPE.format(kind=re.escape(kind), name=typo), msg), msg
        assert "did you mean" in msg  # one letter off: the closest name is suggested
        assert msg.endswith(", ".join(registry.list()))
    with pytest.raises(OnnxAttrError, match="available") as err:
        registry.get("zzzzzz")
    assert "did you mean" not in str(err.value)


@pytest.mark.parametrize(("registry", "kind", "typo", "public"), CASES)
def test_registry_lists_and_gets_what_registered(
    registry: Registry, kind: str, typo: str, public: object
) -> None:
    assert registry.kind == kind and registry.list() == sorted(registry)
    for name in registry.list():
        assert registry.get(name) is registry[name]


def test_registration_at_the_definition_site() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register
    class Knob:
        name = "knob"

    assert reg.get("knob") is Knob and reg.list() == ["knob"]
    with pytest.raises(OnnxAttrError, match=r"^unknown widget 'nob'; did you mean 'knob'\? available: knob$"):
        reg.get("nob")


def test_unknown_estimator_lists_what_the_space_has(tmp_path) -> None:
    """Through compute_affinity the same error shape, offering what this space can compute."""
    from .space_factory import random_space

    random_space(tmp_path / "s.h5", n_models=3, n_probe=6)
    with pytest.raises(OnnxAttrError) as err:
        compute_affinity(tmp_path / "s.h5", "svca")
    msg = str(err.value)
    assert re.match(SHAPE.format(kind="estimator", name="svca"), msg), msg
    assert "did you mean 'svcca'?" in msg
    assert msg.endswith(", ".join(available_estimators(tmp_path / "s.h5")))
