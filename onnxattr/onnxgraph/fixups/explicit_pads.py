"""Pass 30, explicit-pads: auto_pad -> explicit pads for the static input size; asymmetric
ConvTranspose and AveragePool pads -> symmetric ones plus Slice or Pad (onnx2torch rejects all three)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import OnnxAttrError
from ...optypes import PADDED
from ._registry import Fix, register_fixup
from .edits import (
    del_attr,
    get_attr,
    opset,
    plural,
    set_attr,
    static_shapes,
    topo_sort,
)


def _kernel(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> list[int]:
    kernel = get_attr(node, "kernel_shape")
    if kernel is not None:
        return list(kernel)
    return list(shapes[node.input[1]][2:])


def _same_pads(node: onnx.NodeProto, in_sizes: Sequence[int], kernel: Sequence[int]) -> list[int]:
    """Explicit pads [b1, b2, ..., e1, e2, ...] equivalent to auto_pad on this input size."""
    rank = len(kernel)
    strides = get_attr(node, "strides", [1] * rank)
    dilations = get_attr(node, "dilations", [1] * rank)
    mode = get_attr(node, "auto_pad").decode()
    if mode == "VALID":
        return [0] * 2 * rank
    begins, ends = [], []
    for i in range(rank):
        effective = (kernel[i] - 1) * dilations[i] + 1
        if node.op_type == "ConvTranspose":
            out_padding = get_attr(node, "output_padding", [0] * rank)[i]
            out = get_attr(node, "output_shape", None)
            target = out[-rank + i] if out else in_sizes[i] * strides[i]
            total = max(0, strides[i] * (in_sizes[i] - 1) + out_padding + effective - target)
        else:
            out = -(-in_sizes[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + effective - in_sizes[i])
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends


def _split_transpose_pads(graph: onnx.GraphProto, node: onnx.NodeProto, pads: list[int]) -> None:
    """ConvTranspose pads crop its output, so asymmetric pads = symmetric pads + Slice of the rest."""
    rank = len(pads) // 2
    sym = [min(pads[i], pads[rank + i]) for i in range(rank)]
    set_attr(node, "pads", sym + sym)
    starts = [pads[i] - sym[i] for i in range(rank)]
    ends = [-(pads[rank + i] - sym[i]) or np.iinfo(np.int64).max for i in range(rank)]
    out, cropped = node.output[0], f"{node.output[0]}/uncropped"
    node.output[0] = cropped
    base = f"{node.name or out}/crop"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(starts, np.int64), f"{base}/starts"),
            numpy_helper.from_array(np.array(ends, np.int64), f"{base}/ends"),
            numpy_helper.from_array(np.arange(2, 2 + rank, dtype=np.int64), f"{base}/axes"),
        ]
    )
    graph.node.append(
        helper.make_node(
            "Slice", [cropped, f"{base}/starts", f"{base}/ends", f"{base}/axes"], [out], name=base
        )
    )


@register_fixup("explicit-pads", order=30,
                description="auto_pad and asymmetric ConvTranspose/AveragePool pads -> explicit")
def _explicit_pads(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
    g = model.graph
    auto = [
        n
        for n in g.node
        if n.op_type in PADDED and get_attr(n, "auto_pad", b"NOTSET") not in (b"NOTSET", b"")
    ]
    transposed = [
        n
        for n in g.node
        if n.op_type == "ConvTranspose" and n not in auto and _asymmetric(get_attr(n, "pads", []))
    ]
    # onnx2torch's AveragePool before 19 rejects asymmetric pads; this rewrite is the one path for
    # them at every opset (the converters' AveragePool-19/22 leaves them to it)
    pooled = [n for n in g.node if n not in auto and _asymmetric_average_pool(n)]
    if dims is None:
        pooled = []  # the count correction needs the static size: left to onnx2torch's error
    if not auto and not transposed and not pooled:
        return []
    if auto and dims is None:
        names = ", ".join(n.name or n.op_type for n in auto[:3])
        raise OnnxAttrError(
            f"nodes {names} use auto_pad, which needs the static input size; give the input shape"
        )
    wanted = [n.input[0] for n in auto + pooled]
    wanted += [n.input[1] for n in auto if n.op_type.startswith("Conv")]
    try:
        shapes = static_shapes(model, dims, wanted) if wanted else {}
        sizes = {n.input[0]: shapes[n.input[0]][2:] for n in auto + pooled}
    except Exception as err:  # neither shape inference nor onnxruntime could size these inputs
        names = ", ".join(n.name or n.op_type for n in auto[:3])
        raise OnnxAttrError(
            f"cannot size the inputs of {names} (auto_pad) for input {tuple(dims)}: {err}; "
            "check the input shape"
        ) from err
    modes = sorted({get_attr(n, "auto_pad").decode() for n in auto})
    for node in auto:
        kernel = _kernel(node, shapes)
        pads = _same_pads(node, sizes[node.input[0]], kernel)
        del_attr(node, "auto_pad")
        set_attr(node, "pads", pads)
        if node.op_type == "ConvTranspose":
            del_attr(node, "output_shape")
            if _asymmetric(pads):
                transposed.append(node)
        if _asymmetric_average_pool(node):
            pooled.append(node)
    for node in transposed:
        _split_transpose_pads(g, node, list(get_attr(node, "pads")))
    for node in pooled:
        _split_average_pool_pads(model, node, sizes[node.input[0]])
    topo_sort(g)
    fixes = []
    if auto:
        size = "x".join(map(str, dims))
        fixes.append(Fix(
            "auto-pad", len(auto),
            f"{plural(len(auto), 'node')} auto_pad={'/'.join(modes)} -> explicit pads for input {size}",
            {"modes": modes, "input_shape": list(dims)}))
    if transposed:
        fixes.append(Fix(
            "asymmetric-conv-transpose", len(transposed),
            f"{plural(len(transposed), 'asymmetric ConvTranspose')} -> symmetric pads + Slice"))
    if pooled:
        fixes.append(Fix(
            "asymmetric-average-pool", len(pooled),
            f"{plural(len(pooled), 'asymmetric AveragePool')} -> Pad + AveragePool"
            " (x window-size/count where pads are not counted)"))
    return fixes


def _asymmetric_average_pool(node: onnx.NodeProto) -> bool:
    return (
        node.op_type == "AveragePool"
        and not get_attr(node, "ceil_mode", 0)
        and _asymmetric(get_attr(node, "pads", []))
    )


def _split_average_pool_pads(model: onnx.ModelProto, node: onnx.NodeProto, sizes: Sequence[int]):
    """Asymmetric pads -> an explicit zero Pad before an unpadded AveragePool that counts every
    window element; with count_include_pad=0 the output is rescaled by kernel size / elements
    inside the input, a constant map for the static input size."""
    g = model.graph
    pads = list(get_attr(node, "pads"))
    rank = len(pads) // 2
    kernel, strides = list(get_attr(node, "kernel_shape")), list(get_attr(node, "strides", [1] * rank))
    dilations = list(get_attr(node, "dilations", [1] * rank))  # AveragePool-19+
    x, y = node.input[0], node.output[0]
    base = f"{node.name or y}/pad"
    full = [0, 0] + pads[:rank] + [0, 0] + pads[rank:]
    if opset(model) >= 11:
        g.initializer.append(numpy_helper.from_array(np.array(full, np.int64), f"{base}/pads"))
        g.node.append(helper.make_node("Pad", [x, f"{base}/pads"], [base], name=base))
    else:
        g.node.append(helper.make_node("Pad", [x], [base], name=base, pads=full))
    node.input[0] = base
    include = get_attr(node, "count_include_pad", 0)
    set_attr(node, "pads", [0] * 2 * rank)
    set_attr(node, "count_include_pad", 1)
    if include:
        return
    inside = np.pad(np.ones(sizes), list(zip(pads[:rank], pads[rank:])))
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = np.lib.stride_tricks.sliding_window_view(inside, extent)
    windows = windows[tuple(slice(None, None, s) for s in strides)]
    windows = windows[(Ellipsis, *(slice(None, None, d) for d in dilations))]
    counts = windows.sum(axis=tuple(range(rank, 2 * rank)))
    scale = (np.prod(kernel) / counts).astype(np.float32).reshape(1, 1, *counts.shape)
    g.initializer.append(numpy_helper.from_array(scale, f"{base}/count_scale"))
    node.output[0] = f"{y}/all_counted"
    g.node.append(
        helper.make_node("Mul", [node.output[0], f"{base}/count_scale"], [y], name=f"{base}/count")
    )


def _asymmetric(pads: Sequence[int]) -> bool:
    half = len(pads) // 2
    return list(pads[:half]) != list(pads[half:])
