"""The fix-up registry and the :class:`Fix` records passes return; the package imports every pass."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import onnx
from onnx import helper

from ...errors import OnnxAttrError
from ...registry import Registry
from ..graph import real_inputs

#: The code of a graph that only runs one image at a time; the pipeline then uses batch size 1.
SINGLE_IMAGE = "single-image"


@dataclass(frozen=True)
class Fix:
    """One kind of change a fix-up pass made: ``code`` is stable (tests and code match it),
    ``count`` says how many places, ``message`` says it in words, ``detail`` holds the specifics."""

    code: str
    count: int
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    fixup: str = ""  # the pass that made it (set by fix_up)

    def __str__(self) -> str:
        return f"{self.fixup}: {self.message}" if self.fixup else self.message

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "detail": dict(self.detail)}


FixupFn = Callable[[onnx.ModelProto, "list[int] | None"], "list[Fix]"]


@dataclass(frozen=True)
class FixupPass:
    """A registered pass: it mutates the model where needed and returns what it changed."""

    name: str
    order: float
    description: str
    fn: FixupFn


#: Every registered pass by name; :func:`fix_up` runs them sorted by ``order``.
FIXUPS: Registry[FixupPass] = Registry("fix-up")


def register_fixup(name: str, *, order: float, description: str) -> Callable[[FixupFn], FixupFn]:
    """Decorator: run ``fn(model, dims)`` in :func:`fix_up` at position ``order`` (see above)."""

    def decorate(fn: FixupFn) -> FixupFn:
        FIXUPS.add(name, FixupPass(name, order, description, fn))
        return fn

    return decorate


def list_fixups() -> list[FixupPass]:
    """The registered passes in the order :func:`fix_up` runs them."""
    return sorted(FIXUPS.values(), key=lambda p: p.order)


def fix_up(
    model: onnx.ModelProto, input_shape: Sequence[int] | None = None
) -> tuple[onnx.ModelProto, list[Fix]]:
    """Apply each fix-up pass only where needed; return the fixed model and what was changed.
    input_shape is the full static input shape (N, C, H, W or N, H, W, C) the model will be run
    with (batch may be any int > 0)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = _input_dims(fixed, input_shape)
    fixes: list[Fix] = []
    for p in list_fixups():
        fixes += [replace(f, fixup=p.name) for f in p.fn(fixed, dims)]
        _list_initializers_as_inputs(fixed)
    return fixed, fixes


def _list_initializers_as_inputs(model: onnx.ModelProto) -> None:
    """IR 3 requires every initializer to be a graph input too (passes add initializers)."""
    if model.ir_version >= 4:
        return
    listed = {v.name for v in model.graph.input}
    model.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in model.graph.initializer
        if t.name not in listed
    )


def _input_dims(model: onnx.ModelProto, input_shape: Sequence[int] | None) -> list[int] | None:
    """Static shape of the first graph input: the given one, else the declared one if fully static."""
    inputs = real_inputs(model.graph)
    if not inputs:
        return None
    declared = inputs[0].type.tensor_type.shape.dim
    if input_shape is not None:
        if len(input_shape) != len(declared) and len(declared) > 0:
            raise OnnxAttrError(
                f"input shape {tuple(input_shape)} has rank {len(input_shape)} but the model input "
                f"'{inputs[0].name}' has rank {len(declared)}; give a shape of rank {len(declared)}"
            )
        return [int(d) for d in input_shape]
    if declared and all(d.HasField("dim_value") and d.dim_value > 0 for d in declared):
        return [d.dim_value for d in declared]
    return None

