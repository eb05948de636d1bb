"""NCHW or NHWC: the one place that decides a model's layout, from its graph.

Everything that reads a 4-D tensor by its channels goes through here: the input's layout for the
preprocessing (`input_layout`), the channel axis of the encoder tensor that `add`'s features and
`transfer`'s measured oracle both pool (`channel_axis`), and the per-node axes that encoder-node
candidates read spatial sizes with (`channel_axes`). One rule, so the oracle and the stored
features never disagree on a model's layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from ..optypes import CHANNEL_FIRST, REARRANGING
from .nodes import static_shape

#: Channel counts an image input has (gray, RGB): the preprocessing makes only these.
_IMAGE_CHANNELS = (1, 3)


@dataclass(frozen=True)
class ChannelAxis:
    """Which axis of a 4-D tensor holds the channels, and the graph evidence for it."""

    axis: int
    reason: str


def input_layout(shape: Sequence[int | None] | None) -> str:
    """"nhwc" when a 4-D input's last axis, and not its second, is an image's channel count;
    else "nchw", ONNX's convention (also for dynamic or non-image shapes)."""
    if shape is not None and len(shape) == 4:
        if shape[3] in _IMAGE_CHANNELS and shape[1] not in _IMAGE_CHANNELS:
            return "nhwc"
    return "nchw"


def graph_input_layout(model: onnx.ModelProto) -> str:
    """`input_layout` of the model's first non-initializer input."""
    inits = {i.name for i in model.graph.initializer}
    inp = next((i for i in model.graph.input if i.name not in inits), None)
    return input_layout(static_shape(inp) if inp is not None else None)


def channel_axes(model: onnx.ModelProto, input_axis: int) -> dict[str, ChannelAxis]:
    """The channel axis of every tensor the graph computes, read as a 4-D map.

    Propagated forward from the graph input (whose channel axis is `input_axis`, from the
    preprocessing layout) and from every op whose output is channel-first by the ONNX
    specification (Conv, pooling, BatchNormalization, ...), through layout-preserving ops
    (activations, element-wise arithmetic, Concat, Pad, Resize, ...) by their first non-constant
    input, composing every Transpose. A TFLite or Keras model converted by tf2onnx takes NHWC
    input, transposes it, and runs its convolutions channel-first, so its encoder tensor is usually
    NCHW although its input is NHWC. After an op that rearranges axes (Reshape, Squeeze, MatMul,
    reductions, ...) nothing can be concluded and ONNX's convention (axis 1) is assumed, and said
    so in `reason`. Tensors without a known producer are absent (read them as axis 1).
    """
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    # (axis, the op or input it comes from, Transposes composed since), per tensor
    known: dict[str, tuple[int, str, int]] = {
        i.name: (input_axis, f"graph input {i.name!r} (preprocessing layout)", 0)
        for i in model.graph.input
        if i.name not in inits
    }
    fixed: dict[str, ChannelAxis] = {}  # conclusions that no later op can refine
    for node in model.graph.node:
        label = f"{node.op_type} {node.name or node.output[0]!r}"
        data = [i for i in node.input if i and i not in consts]
        if node.op_type in CHANNEL_FIRST:
            state: tuple[int, str, int] | ChannelAxis = (1, f"{label} (channel-first)", 0)
        elif node.op_type in REARRANGING:
            state = ChannelAxis(1, f"{label} rearranges axes: ONNX's channel-first convention assumed")
        elif not data:
            state = ChannelAxis(1, f"{node.op_type} {node.name!r} has only constant inputs")
        elif data[0] in fixed:
            state = fixed[data[0]]
        elif data[0] not in known:
            state = ChannelAxis(1, f"tensor {data[0]!r} has no producer: ONNX's channel-first convention")
        else:
            axis, origin, transposes = known[data[0]]
            state = (axis, origin, transposes)
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [3, 2, 1, 0])
                if len(perm) != 4 or axis not in perm:
                    state = ChannelAxis(1, f"a non 4-D Transpose {perm}: ONNX's channel-first convention")
                else:
                    state = (perm.index(axis), origin, transposes + 1)
        for out in node.output:
            if out and isinstance(state, ChannelAxis):
                fixed[out] = state
            elif out:
                known[out] = state
    axes = dict(fixed)
    for name, (axis, origin, transposes) in known.items():
        via = f" and {transposes} Transpose(s)" if transposes else ""
        axes[name] = ChannelAxis(axis, f"from {origin}{via}")
    return axes


def channel_axis(model: onnx.ModelProto, tensor: str, input_axis: int) -> ChannelAxis:
    """The channel axis of `tensor` (see `channel_axes`), decided from the graph rather than from
    the input's layout."""
    found = channel_axes(model, input_axis).get(tensor)
    if found is None:
        return ChannelAxis(1, f"tensor {tensor!r} has no producer: ONNX's channel-first convention")
    return found
