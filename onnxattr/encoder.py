"""ONNX file -> encoder: truncated at the encoder tensor, its preprocessing and channel axis decided
(by `onnxgraph.layout`), fixed up. The one path that `add` (pipeline), feature recompute (features)
and measured transfer (`transfer.sources`) all build on, so they read a model with one layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from .errors import OnnxAttrError
from .onnxgraph import graph as onnx_graph
from .onnxgraph.fixups import Fix, fix_up
from .onnxgraph.layout import ChannelAxis, channel_axis, input_layout
from .preprocess import PRESETS, Preprocessing


@dataclass
class Encoder:
    """An ONNX model truncated at its encoder tensor and fixed up, with its preprocessing."""

    model: onnx.ModelProto
    tensor: str
    preprocessing: Preprocessing
    channel_axis: ChannelAxis
    fixups: list[Fix]
    onnx_sha256: str
    producer: str = ""


def default_preprocessing(model_input_shape: list[int | None], layout: str | None) -> Preprocessing:
    """Input size and layout read off the model's static input shape where it has one."""
    shape = model_input_shape
    if len(shape) != 4:
        raise OnnxAttrError(
            f"the model input has rank {len(shape)}; onnxattr needs an image input (N,C,H,W or N,H,W,C)"
        )
    if layout is None:
        layout = input_layout(shape)
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    c = shape[1] if layout == "nchw" else shape[3]
    return Preprocessing(
        input_size=(h or 224, w or 224), layout=layout, color="gray" if c == 1 else "rgb",
    )


def make_preprocessing(
    model_input_shape: list[int | None], spec: Preprocessing | dict[str, Any] | None
) -> Preprocessing:
    """The model's own input size/layout, then a preset, then explicit values (flags or a file)."""
    if isinstance(spec, Preprocessing):
        return spec
    spec = {k: v for k, v in (spec or {}).items() if v is not None}
    base = default_preprocessing(model_input_shape, spec.get("layout")).to_dict()
    preset = spec.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise OnnxAttrError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
        base.update(PRESETS[preset], preset=preset)
    base.update(spec)
    return Preprocessing.from_dict(base)


def load_encoder(
    model_path: str | Path | onnx.ModelProto,
    encoder_node: str | None,
    preprocessing: Preprocessing | dict[str, Any] | None,
) -> Encoder:
    """Load, truncate at the encoder, decide its preprocessing and channel axis, apply fix-ups.
    A model already loaded (to check its sha256 first) is taken as it is."""
    full = model_path if isinstance(model_path, onnx.ModelProto) else onnx_graph.load(model_path)
    onnx_sha, producer = onnx_graph.sha256(full), full.producer_name
    tensor = onnx_graph.resolve_encoder(full, encoder_node)
    encoder = onnx_graph.truncate(full, tensor)
    del full
    input_shape = onnx_graph.static_shape(onnx_graph.graph_input(encoder))
    pre = make_preprocessing(input_shape, preprocessing)
    _check_input_compatible(input_shape, pre)
    axis = channel_axis(encoder, tensor, 1 if pre.layout == "nchw" else 3)
    encoder, fixups = fix_up(encoder, list(pre.input_shape(1)))
    return Encoder(encoder, tensor, pre, axis, fixups, onnx_sha, producer)


def _check_input_compatible(shape: list[int | None], pre: Preprocessing) -> None:
    want = pre.input_shape(1)
    if len(shape) != len(want) or any(s is not None and s != w for s, w in zip(shape[1:], want[1:])):
        raise OnnxAttrError(
            f"the model's input shape is {['?' if s is None else s for s in shape]} but the "
            f"preprocessing gives {list(want)}; set `input_size`, `layout`, `color` to match"
        )
