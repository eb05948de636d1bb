"""Padding and resampling: Pad-18/19/21 (axes, wrap), Resize-18/19, Upsample-7/9."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from onnx2torch.utils.common import (
    OnnxMapping,
)

from ._common import _const_inputs, _ConstInputs, _result
from ._registry import register_converter

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
