"""onnx2torch converters for the ONNX op versions (opsets 7-22) that onnx2torch 1.5.15 lacks.

onnx2torch keys converters by (domain, op_type, since_version) and looks up the schema version that is
current at the model's opset, so a model at opset 20 needs e.g. ('', 'ReduceMean', 18). Two kinds here:

* version bumps that change nothing a float model sees (wider type constraints, broadcasting or
  negative axes allowed; an attribute or output whose default is the old behaviour) are mapped to
  onnx2torch's converter of the neighbouring version. The tests check each against onnx.defs (same
  inputs, outputs and attributes, or exactly the documented difference) and against onnxruntime.
* real semantic changes get converters: Reduce*-18/20 (axes became an input), Split-18 (num_outputs),
  Pad-18/19/21 (axes input, wrap mode), Resize-18/19 (axes, keep_aspect_ratio_policy,
  half_pixel_symmetric; a general separable implementation of every coordinate and rounding mode),
  AveragePool-19/22 (dilations), BatchNormalization-7 (spatial attribute); where onnx2torch's own
  converter is wrong or missing for an older version: NonZero-9 (its NonZero-13 returns the
  transposed index matrix), Slice-1, DepthToSpace-1 (DCR); plus ops onnx2torch has no
  converter for at all that exporters write for vision encoders: Gelu-20 (torch's dynamo exporter),
  GroupNormalization-18/21, GlobalMaxPool, SpaceToDepth, Upsample-7/9 (old exports).

Each converter is filed with onnx2torch by ``@register_converter(op, *versions)`` at its definition,
through onnx2torch's public ``add_converter``, when this module is imported (``convert`` imports
it); a new one is one decorated function in any module imported before conversion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import zip_longest
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnx import defs
from onnx2torch.node_converters.registry import add_converter, get_converter
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
    get_const_value,
    onnx_mapping_from_node,
)
from torch import nn

from ..errors import OnnxAttrError

# (op_type, new since_version, onnx2torch's version whose converter it reuses)
_SAME_SIGNATURE: list[tuple[str, int, int]] = [
    ("Acos", 22, 7), ("Asin", 22, 7), ("Atan", 22, 7), ("Cos", 22, 7), ("Sin", 22, 7), ("Tan", 22, 7),
    ("Conv", 22, 11), ("ConvTranspose", 22, 11), ("MaxPool", 22, 12), ("GlobalAveragePool", 22, 1),
    ("Constant", 19, 13), ("Constant", 21, 13), ("ConstantOfShape", 20, 9),
    ("ConstantOfShape", 21, 9), ("Dropout", 7, 10), ("Dropout", 22, 13), ("Elu", 22, 6),
    ("Equal", 19, 13), ("EyeLike", 22, 9), ("Flatten", 21, 13), ("Gemm", 7, 9),
    ("GreaterOrEqual", 16, 12), ("LessOrEqual", 16, 12), ("HardSigmoid", 22, 6),
    ("HardSwish", 22, 14), ("Identity", 19, 16), ("Identity", 21, 16),
    ("InstanceNormalization", 22, 6), ("IsInf", 20, 10), ("IsNaN", 9, 13), ("IsNaN", 20, 13),
    ("Reshape", 19, 14), ("Reshape", 21, 14), ("Round", 22, 11), ("ScatterND", 18, 16),
    ("Selu", 22, 6), ("Shape", 19, 15), ("Shape", 21, 15),
    ("Softplus", 22, 1), ("Softsign", 22, 1), ("Transpose", 21, 13), ("Unsqueeze", 21, 13),
]
# Older versions current at opsets 7-10 whose onnx2torch converter covers them too.
_OLD_SAME_SIGNATURE: list[tuple[str, int, int]] = [
    ("ArgMax", 1, 11), ("ArgMin", 1, 11),  # 11: negative axis allowed
    ("Cast", 6, 9), ("Constant", 1, 9), ("Flatten", 1, 9),  # types only
    ("Max", 6, 8), ("Min", 6, 8), ("Mean", 6, 8), ("Sum", 6, 8),  # 8: broadcasting allowed
]
# A newer version adds an attribute/output whose default is the older version's only behaviour:
# Cast-19/21 `saturate` (float8 targets only), MaxPool-8 `storage_order` and the Indices output.
_NEW_ATTRIBUTE_IRRELEVANT: list[tuple[str, int, int]] = [
    ("Cast", 19, 13), ("Cast", 21, 13), ("MaxPool", 1, 8),
]

_REDUCE_OPS = (
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSumSquare",
)

Converter = Callable[..., OperationConverterResult]  # (node, graph) -> result, as onnx2torch's


def register_converter(op: str, *versions: int, domain: str = "") -> Callable[[Converter], Converter]:
    """Decorator: file the converter with onnx2torch (its public ``add_converter``) for each
    ``version`` (the op's schema since_version) when the defining module is imported. A version
    onnx2torch already ships keeps onnx2torch's converter."""

    def decorate(converter: Converter) -> Converter:
        for version in versions:
            try:
                add_converter(operation_type=op, version=version, domain=domain)(converter)
            except ValueError:  # already there (a newer onnx2torch may ship it): keep theirs
                pass
        return converter

    return decorate


def _existing(op: str, version: int) -> Converter:
    """onnx2torch's converter of the op's schema current at opset ``version``."""
    return get_converter(operation_type=op, version=version, domain="")


for _op, _new, _old in _SAME_SIGNATURE + _OLD_SAME_SIGNATURE + _NEW_ATTRIBUTE_IRRELEVANT:
    register_converter(_op, _new)(_existing(_op, _old))


# ------------------------------------------------------------------------------ check_convertible
_HINTS = {
    **dict.fromkeys(
        ("DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
         "ConvInteger", "QLinearConv", "QLinearMatMul"),
        "fix_up turns quantized ops back into float ones only where weights and scales are "
        "constant (DequantizeLinear/QDQ, QLinearConv/MatMul and onnxruntime's QLinear* ops, "
        "dynamic int8 MatMul/Conv); run fix_up first, else export the float model or pick an "
        "earlier encoder node",
    ),
    **dict.fromkeys(
        ("LSTM", "GRU", "RNN", "Loop", "Scan", "If"),
        "recurrent/control-flow layers usually follow the encoder: pick an earlier encoder node",
    ),
}


def check_convertible(model: onnx.ModelProto) -> None:
    """Raise OnnxAttrError listing the op types (with node names) that have no converter for their
    (op_type, opset version), with a hint on what to do."""
    opsets = {o.domain or "": o.version for o in model.opset_import}
    missing: dict[str, list[str]] = {}
    for i, node in enumerate(model.graph.node):
        domain = "" if node.domain == "ai.onnx" else node.domain
        version = opsets.get(domain, opsets.get("", 0))
        try:
            get_converter(operation_type=node.op_type, version=version, domain=domain)
        except NotImplementedError:
            missing.setdefault(_op_key(node.op_type, version, domain), []).append(node.name or f"#{i}")
    if not missing:
        return
    listed = "; ".join(
        f"{op} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
        for op, names in missing.items()
    )
    hints = sorted({_hint(op) for op in missing})
    raise OnnxAttrError(f"no torch converter for {listed}. " + " ".join(hints))


def _op_key(op: str, version: int, domain: str) -> str:
    """'LSTM-14' for an ONNX op (its schema version), 'domain.Op' for anything else."""
    try:
        since = defs.get_schema(op, max_inclusive_version=version, domain=domain).since_version
        return f"{op}-{since}"
    except Exception:  # not an ONNX operator: custom domain, or TFLite ops tf2onnx left in ''
        return f"{domain}.{op}" if domain else op


def _hint(key: str) -> str:
    name = key.split("-")[0].rsplit(".", 1)[-1]
    if name in _HINTS:
        return f"{name}: {_HINTS[name]}."
    if key.startswith("com.microsoft."):
        return (
            f"{key} is an onnxruntime contrib op (e.g. from its QOperator quantizer; the common "
            "QLinear* ones are turned back into float ops by fix_up): pick an encoder node before it."
        )
    if "-" not in key:
        return (
            f"{key} is not an ONNX operator (a custom op, e.g. TFLite's left by tf2onnx): pick an "
            "encoder node before it (list them with `onnxattr nodes MODEL`)."
        )
    return "Pick an earlier encoder node (list them with `onnxattr nodes MODEL`)."


# ------------------------------------------------------------------------------ shared machinery
class _ConstInputs(nn.Module, OnnxToTorchModule):
    """An op whose inputs after the first are read at conversion time where they are constant in the
    graph (the usual case: axes, pads, sizes) and passed to forward, in order, where they are not."""

    def __init__(self, static: dict[str, Any], dynamic: Sequence[str]):
        super().__init__()
        self.static = static
        self.dynamic = list(dynamic)

    def values(self, tensors: Sequence[torch.Tensor]) -> dict[str, Any]:
        values = dict(self.static)
        values.update({k: t.tolist() for k, t in zip(self.dynamic, tensors)})
        return values


def _const_inputs(node, graph, names: Sequence[str]):
    """Split the node's inputs after the first into constant values and run-time inputs; returns
    (static values, names of dynamic ones, OnnxMapping with the data and dynamic inputs)."""
    static, dynamic, dynamic_values = {}, [], []
    for name, value_name in zip_longest(names, node.input_values[1:]):
        if not value_name:
            static[name] = None
            continue
        try:
            value = get_const_value(value_name, graph)
            static[name] = value.tolist() if isinstance(value, torch.Tensor) else value
        except KeyError:
            dynamic.append(name)
            dynamic_values.append(value_name)
    mapping = OnnxMapping(inputs=(node.input_values[0], *dynamic_values), outputs=node.output_values)
    return static, dynamic, mapping


def _result(module: nn.Module, mapping: OnnxMapping) -> OperationConverterResult:
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping)


def _node_mapping(node) -> OnnxMapping:
    return onnx_mapping_from_node(node)


# ----------------------------------------------------------------------------------------- Reduce
def _reduce(op: str, x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    if op == "ReduceMean":
        return torch.mean(x, dim=dims, keepdim=keepdim)
    if op == "ReduceMax":
        return torch.amax(x, dim=dims, keepdim=keepdim)
    if op == "ReduceMin":
        return torch.amin(x, dim=dims, keepdim=keepdim)
    if op == "ReduceL1":
        return torch.sum(torch.abs(x), dim=dims, keepdim=keepdim)
    if op == "ReduceL2":
        return torch.sqrt(torch.sum(x * x, dim=dims, keepdim=keepdim))
    if op == "ReduceSumSquare":
        return torch.sum(x * x, dim=dims, keepdim=keepdim)
    if op == "ReduceLogSum":
        return torch.log(torch.sum(x, dim=dims, keepdim=keepdim))
    if op == "ReduceLogSumExp":
        return torch.logsumexp(x, dim=dims, keepdim=keepdim)
    for d in sorted(dims, reverse=True):  # ReduceProd: torch.prod takes one dim
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


def _per_element(op: str, x: torch.Tensor) -> torch.Tensor:
    if op in ("ReduceL1", "ReduceL2"):
        return torch.abs(x)
    if op == "ReduceSumSquare":
        return x * x
    if op == "ReduceLogSum":
        return torch.log(x)
    return x


class OnnxReduce18(_ConstInputs):
    """Reduce*-18: axes is an input; empty axes reduce everything unless noop_with_empty_axes."""

    def __init__(self, op: str, keepdims: bool, noop: bool, static, dynamic):
        super().__init__(static, dynamic)
        self.op, self.keepdims, self.noop = op, keepdims, noop

    def forward(self, x: torch.Tensor, *dynamic: torch.Tensor) -> torch.Tensor:
        axes = self.values(dynamic)["axes"]
        if not axes:
            if self.noop:  # no reduction, but the per-element part still applies (as onnxruntime)
                return _per_element(self.op, x)
            axes = list(range(x.dim()))
        dims = sorted({a % x.dim() for a in axes})
        return _reduce(self.op, x, dims, self.keepdims)


@register_converter("ReduceMax", 20)  # 20: bool inputs allowed
@register_converter("ReduceMin", 20)
def _convert_reduce(node, graph):
    static, dynamic, mapping = _const_inputs(node, graph, ["axes"])
    a = node.attributes
    module = OnnxReduce18(
        node.operation_type, bool(a.get("keepdims", 1)), bool(a.get("noop_with_empty_axes", 0)),
        static, dynamic,
    )
    return _result(module, mapping)


for _op in _REDUCE_OPS:
    register_converter(_op, 18)(_convert_reduce)


# ------------------------------------------------------------------------------------------ Split
class OnnxSplit18(_ConstInputs):
    """Split-18: sizes from the `split` input, else `num_outputs` chunks (the last one smaller)."""

    def __init__(self, axis: int, num_outputs: int, static, dynamic):
        super().__init__(static, dynamic)
        self.axis, self.num_outputs = axis, num_outputs

    def forward(self, x: torch.Tensor, *dynamic: torch.Tensor):
        sizes = self.values(dynamic)["split"]
        if sizes is None:
            sizes = math.ceil(x.shape[self.axis] / self.num_outputs)
        parts = torch.split(x, sizes, dim=self.axis)
        return parts[0] if self.num_outputs == 1 else parts  # onnx2torch indexes only multi-outputs


@register_converter("Split", 18)
def _convert_split(node, graph):
    static, dynamic, mapping = _const_inputs(node, graph, ["split"])
    a = node.attributes
    module = OnnxSplit18(a.get("axis", 0), len(node.output_values), static, dynamic)
    return _result(module, mapping)


# -------------------------------------------------------------------------------------------- Pad
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


class OnnxPad18(_ConstInputs):
    """Pad-18/19/21: pads for the listed `axes` only (default all); modes constant/reflect/edge/wrap."""

    def __init__(self, mode: str, static, dynamic):
        super().__init__(static, dynamic)
        if mode not in _PAD_MODES:
            raise NotImplementedError(f"Pad mode {mode!r} is not supported")
        self.mode = _PAD_MODES[mode]

    def forward(self, x: torch.Tensor, *dynamic: torch.Tensor) -> torch.Tensor:
        v = self.values(dynamic)
        rank, pads = x.dim(), v["pads"]
        axes = [a % rank for a in (v["axes"] if v["axes"] is not None else range(rank))]
        begin, end = [0] * rank, [0] * rank
        for i, a in enumerate(axes):
            begin[a], end[a] = pads[i], pads[len(axes) + i]
        padded = [d for d in range(rank) if begin[d] or end[d]]
        if not padded:
            return x
        first = padded[0]
        torch_pads = [p for d in reversed(range(first, rank)) for p in (begin[d], end[d])]
        if self.mode == "constant":
            value = v["constant_value"]
            value = 0.0 if value is None else float(value if not isinstance(value, list) else value[0])
            return F.pad(x, torch_pads, value=value)
        # torch pads the last 1-3 dims of a (N, C, ...) tensor in these modes: fold the rest into N
        k = rank - first
        if k > 3:
            raise NotImplementedError(f"Pad mode {self.mode} on {k} trailing dims is not supported")
        shape = x.shape
        y = F.pad(x.reshape(1, -1, *shape[first:]), torch_pads, mode=self.mode)
        return y.reshape(*shape[:first], *y.shape[2:])


@register_converter("Pad", 18, 19, 21)
def _convert_pad(node, graph):
    static, dynamic, mapping = _const_inputs(node, graph, ["pads", "constant_value", "axes"])
    return _result(OnnxPad18(node.attributes.get("mode", "constant"), static, dynamic), mapping)


# ----------------------------------------------------------------------------------------- Resize
class OnnxResize18(_ConstInputs):
    """Resize-18/19 (and Upsample) as separable 1-D interpolation along each resized axis, following
    the ONNX definition for every coordinate_transformation_mode except tf_crop_and_resize, every
    nearest_mode, linear and cubic (with cubic_coeff_a and exclude_outside), and
    keep_aspect_ratio_policy. Index-and-weight sums keep gradients exact."""

    def __init__(self, attrs: dict[str, Any], static, dynamic):
        super().__init__(static, dynamic)
        self.mode = attrs.get("mode", "nearest")
        self.coordinate = attrs.get("coordinate_transformation_mode", "half_pixel")
        self.nearest = attrs.get("nearest_mode", "round_prefer_floor")
        self.cubic_a = attrs.get("cubic_coeff_a", -0.75)
        self.exclude_outside = bool(attrs.get("exclude_outside", 0))
        self.axes = attrs.get("axes")
        self.policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if self.coordinate == "tf_crop_and_resize":
            raise NotImplementedError("Resize with tf_crop_and_resize is not supported")
        if self.mode not in ("nearest", "linear", "cubic"):
            raise NotImplementedError(f"Resize mode {self.mode!r} is not supported")
        self.antialias = bool(attrs.get("antialias", 0))  # a no-op unless an axis shrinks

    def forward(self, x: torch.Tensor, *dynamic: torch.Tensor) -> torch.Tensor:
        v = self.values(dynamic)
        rank = x.dim()
        axes = [a % rank for a in (self.axes if self.axes is not None else range(rank))]
        in_sizes = [x.shape[a] for a in axes]
        if v.get("sizes"):
            sizes = [int(s) for s in v["sizes"]]
            if self.policy != "stretch":
                pick = min if self.policy == "not_larger" else max
                scale = pick(s / n for s, n in zip(sizes, in_sizes))
                scales = [scale] * len(axes)
                sizes = [int(math.floor(scale * n + 0.5)) for n in in_sizes]
            else:
                scales = [s / n for s, n in zip(sizes, in_sizes)]
        else:
            scales = [float(s) for s in v["scales"]]
            sizes = [int(math.floor(n * s)) for n, s in zip(in_sizes, scales)]
        for axis, n, out, scale in zip(axes, in_sizes, sizes, scales):
            if out == n and scale == 1.0:
                continue
            if self.antialias and scale < 1.0 and self.mode != "nearest":
                raise NotImplementedError("Resize with antialias when downscaling is not supported")
            x = self._resize_axis(x, axis, n, out, scale)
        return x

    def _source(self, n: int, out: int, scale: float, device) -> torch.Tensor:
        i = torch.arange(out, dtype=torch.float64, device=device)
        c = self.coordinate
        if c == "asymmetric":
            return i / scale
        if c == "align_corners":
            return i * 0.0 if out == 1 else i * (n - 1) / (out - 1)
        if c == "pytorch_half_pixel" and out == 1:
            return i * 0.0
        if c == "half_pixel_symmetric":
            adjustment = out / (scale * n)
            return n / 2 * (1 - adjustment) + (i + 0.5) / scale - 0.5
        if c in ("half_pixel", "pytorch_half_pixel"):
            return (i + 0.5) / scale - 0.5
        if c == "tf_half_pixel_for_nn":
            return (i + 0.5) / scale
        raise NotImplementedError(f"coordinate_transformation_mode {c!r} is not supported")

    def _resize_axis(self, x: torch.Tensor, axis: int, n: int, out: int, scale: float):
        src = self._source(n, out, scale, x.device)
        if self.mode == "nearest":
            rounding = {
                "round_prefer_floor": lambda s: torch.ceil(s - 0.5),
                "round_prefer_ceil": lambda s: torch.floor(s + 0.5),
                "floor": torch.floor,
                "ceil": torch.ceil,
            }[self.nearest]
            index = rounding(src).clamp(0, n - 1).long()
            return x.index_select(axis, index)
        base = torch.floor(src)
        t = src - base
        if self.mode == "linear":
            offsets, weights = (0, 1), [1 - t, t]
        else:
            a = self.cubic_a
            offsets = (-1, 0, 1, 2)
            weights = [
                ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                ((a + 2) * t - (a + 3)) * t * t + 1,
                ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
            ]
        indices = [base + o for o in offsets]
        if self.exclude_outside:
            weights = [w * ((i >= 0) & (i <= n - 1)) for w, i in zip(weights, indices)]
            total = sum(weights)
            weights = [w / total for w in weights]
        shape = [1] * x.dim()
        shape[axis] = out
        result = 0
        for i, w in zip(indices, weights):
            taken = x.index_select(axis, i.clamp(0, n - 1).long())
            result = result + taken * w.to(x.dtype).reshape(shape)
        return result


@register_converter("Resize", 18, 19)
def _convert_resize(node, graph):
    static, dynamic, mapping = _const_inputs(node, graph, ["roi", "scales", "sizes"])
    return _result(OnnxResize18(dict(node.attributes), static, dynamic), mapping)


@register_converter("Upsample", 7, 9)
def _convert_upsample(node, graph):
    """Upsample-7 (scales attribute) / -9 (scales input): Resize with asymmetric coordinates."""
    attrs = {"mode": node.attributes.get("mode", "nearest"), "nearest_mode": "floor",
             "coordinate_transformation_mode": "asymmetric"}
    if "scales" in node.attributes:
        mapping = OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values)
        static = {"roi": None, "scales": list(node.attributes["scales"]), "sizes": None}
        return _result(OnnxResize18(attrs, static, []), mapping)
    static, dynamic, mapping = _const_inputs(node, graph, ["scales"])
    static.update(roi=None, sizes=None)
    return _result(OnnxResize18(attrs, static, dynamic), mapping)


# ------------------------------------------------------------------------------------ AveragePool
class OnnxAveragePool19(nn.Module, OnnxToTorchModule):
    """AveragePool-19/22: adds dilations; asymmetric pads handled too (window sums / counts)."""

    def __init__(self, kernel, strides, pads, dilations, count_include_pad: bool, ceil_mode: bool):
        super().__init__()
        self.kernel, self.strides, self.pads = list(kernel), list(strides), list(pads)
        self.dilations, self.count_include_pad, self.ceil_mode = list(dilations), count_include_pad, ceil_mode
        rank = len(self.kernel)
        self.simple = (
            all(d == 1 for d in self.dilations)
            and self.pads[:rank] == self.pads[rank:]
            and all(2 * p <= k for p, k in zip(self.pads[:rank], self.kernel))
        )
        if not self.simple and ceil_mode:
            raise NotImplementedError("AveragePool with ceil_mode and dilations/asymmetric pads")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = len(self.kernel)
        if self.simple:
            pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
            return pool(x, self.kernel, self.strides, self.pads[:rank], self.ceil_mode, self.count_include_pad)
        conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
        torch_pads = [p for d in reversed(range(rank)) for p in (self.pads[d], self.pads[rank + d])]
        channels = x.shape[1]
        ones = x.new_ones(channels, 1, *self.kernel)
        sums = conv(F.pad(x, torch_pads), ones, None, self.strides, 0, self.dilations, channels)
        if self.count_include_pad:
            return sums / math.prod(self.kernel)
        mask = F.pad(x.new_ones(1, 1, *x.shape[2:]), torch_pads)
        counts = conv(mask, ones[:1], None, self.strides, 0, self.dilations)
        return sums / counts


@register_converter("AveragePool", 19, 22)
def _convert_average_pool(node, graph):
    a = node.attributes
    kernel = a["kernel_shape"]
    rank = len(kernel)
    if a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        raise NotImplementedError("AveragePool with auto_pad=SAME_*: run onnxattr's fix_up first")
    module = OnnxAveragePool19(
        kernel, a.get("strides", [1] * rank), a.get("pads", [0] * 2 * rank),
        a.get("dilations", [1] * rank), bool(a.get("count_include_pad", 0)), bool(a.get("ceil_mode", 0)),
    )
    return _result(module, _node_mapping(node))


# ------------------------------------------------------------------------------- other operators
def _batch_norm_7(base: Callable) -> Callable:
    """BatchNormalization-7 has `spatial`; with spatial=1 (default) it is BatchNormalization-9."""

    def convert(node, graph):
        if node.attributes.get("spatial", 1) != 1:
            raise NotImplementedError("BatchNormalization-7 with spatial=0 is not supported")
        return base(node, graph)

    return convert


register_converter("BatchNormalization", 7)(_batch_norm_7(_existing("BatchNormalization", 9)))


@register_converter("Gelu", 20)
def _convert_gelu(node, graph):
    approximate = node.attributes.get("approximate", "none")
    return _result(nn.GELU(approximate=approximate), _node_mapping(node))


class OnnxGroupNorm(nn.Module, OnnxToTorchModule):
    """GroupNormalization: opset 18 has one scale/bias per group, 21 one per channel."""

    def __init__(self, groups: int, epsilon: float, per_group: bool):
        super().__init__()
        self.groups, self.epsilon, self.per_group = groups, epsilon, per_group

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.per_group:
            repeat = x.shape[1] // self.groups
            scale, bias = scale.repeat_interleave(repeat), bias.repeat_interleave(repeat)
        return F.group_norm(x, self.groups, scale, bias, self.epsilon)


def _group_norm(per_group: bool) -> Callable:
    def convert(node, graph):
        a = node.attributes
        module = OnnxGroupNorm(a["num_groups"], a.get("epsilon", 1e-5), per_group)
        return _result(module, _node_mapping(node))

    return convert


register_converter("GroupNormalization", 18)(_group_norm(per_group=True))
register_converter("GroupNormalization", 21)(_group_norm(per_group=False))


class OnnxSlice1(nn.Module, OnnxToTorchModule):
    """Slice-1: starts/ends/axes are attributes."""

    def __init__(self, starts: list[int], ends: list[int], axes: list[int] | None):
        super().__init__()
        self.starts, self.ends, self.axes = starts, ends, axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = [slice(None)] * x.dim()
        for axis, start, end in zip(self.axes or range(len(self.starts)), self.starts, self.ends):
            index[axis] = slice(start, end)
        return x[tuple(index)]


@register_converter("Slice", 1)  # onnx2torch files a broken one under Slice-9
def _convert_slice_1(node, graph):
    a = node.attributes
    return _result(OnnxSlice1(a["starts"], a["ends"], a.get("axes")), _node_mapping(node))


class OnnxDepthSpace(nn.Module, OnnxToTorchModule):
    """DepthToSpace in DCR order (ONNX default, what TensorFlow exports) and SpaceToDepth."""

    def __init__(self, blocksize: int, to_space: bool):
        super().__init__()
        self.blocksize, self.to_space = blocksize, to_space

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.blocksize
        n, c, h, w = x.shape
        if self.to_space:
            y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
            return y.reshape(n, c // (b * b), h * b, w * b)
        y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)


@register_converter("DepthToSpace", 1)  # onnx2torch's 11/13 do CRD only
def _convert_depth_to_space(node, graph):
    return _result(OnnxDepthSpace(node.attributes["blocksize"], True), _node_mapping(node))


@register_converter("SpaceToDepth", 1, 13)
def _convert_space_to_depth(node, graph):
    return _result(OnnxDepthSpace(node.attributes["blocksize"], False), _node_mapping(node))


class OnnxNonZero(nn.Module, OnnxToTorchModule):
    """Indices of non-zero elements as ONNX lays them out: (rank, count)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(x).T


@register_converter("NonZero", 9)  # not onnx2torch's NonZero-13: that one is transposed
def _convert_nonzero(node, graph):
    return _result(OnnxNonZero(), _node_mapping(node))


class OnnxGlobalMaxPool(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


@register_converter("GlobalMaxPool", 1, 22)
def _convert_global_max_pool(node, graph):
    return _result(OnnxGlobalMaxPool(), _node_mapping(node))
