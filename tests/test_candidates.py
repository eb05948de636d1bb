"""The ★ encoder candidate of `onnxattr nodes` on tiny architectures built with onnx.helper: each
rule (pre-logits, trunk, bottleneck) on the pattern it is meant for, without the zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxattr.onnxgraph import graph
from onnxattr.optypes import VIEWS
from tests.onnx_builders import init, make_model

BENCHMARK_ENCODERS = Path(graph.__file__).parents[1] / "benchmark" / "data" / "encoders"


def same_encoder(model: onnx.ModelProto, a: str, b: str) -> bool:
    """Whether truncating at tensor `a` or `b` gives onnxattr the same encoder: equal after
    stepping both back through pure views (a Transpose/Flatten named `encoder`) and global
    average pooling (the mean of the output units it attributes, and the per-channel features it
    stores, are the same for a map and its pooled vector)."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def computed_by(t: str) -> str:
        while t in producer and (
            producer[t].op_type in VIEWS or producer[t].op_type == "GlobalAveragePool"
        ):
            t = producer[t].input[0]
        return t

    return computed_by(a) == computed_by(b)


class Net:
    """A graph under construction: each method adds one op and returns its output tensor name
    (named after the op, so tests can refer to it)."""

    def __init__(self, channels: int = 3, size: int = 64, layout: str = "nchw") -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.width = {"x": channels}
        shape = [1, channels, size, size] if layout == "nchw" else [1, size, size, channels]
        self.input = ("x", shape)
        self.rng = np.random.default_rng(0)

    def _add(self, op: str, inputs: list[str], name: str, width: int, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        self.width[name] = width
        return name

    def const(self, name: str, value) -> str:
        self.inits.append(init(name, np.asarray(value, np.float32)))
        return name

    def conv(self, x: str, cout: int, name: str, k: int = 3, stride: int = 1) -> str:
        w = self.const(f"{name}.w", self.rng.normal(size=(cout, self.width[x], k, k)) * 0.1)
        pad = k // 2
        return self._add("Conv", [x, w], name, cout, pads=[pad] * 4, strides=[stride] * 2)

    def relu(self, x: str, name: str) -> str:
        return self._add("Relu", [x], name, self.width[x])

    def block(self, x: str, cout: int, name: str, stride: int = 1) -> str:
        """conv + relu, the relu named `name`."""
        return self.relu(self.conv(x, cout, f"{name}.conv", stride=stride), name)

    def pool(self, x: str, name: str) -> str:
        return self._add("MaxPool", [x], name, self.width[x], kernel_shape=[2, 2], strides=[2, 2])

    def up(self, x: str, name: str) -> str:
        scales = self.const(f"{name}.scales", [1, 1, 2, 2])
        return self._add("Resize", [x, "", scales], name, self.width[x], mode="nearest")

    def add(self, a: str, b: str, name: str) -> str:
        return self._add("Add", [a, b], name, self.width[a])

    def mul(self, a: str, b: str, name: str) -> str:
        return self._add("Mul", [a, b], name, self.width[a])

    def concat(self, xs: list[str], name: str) -> str:
        return self._add("Concat", xs, name, sum(self.width[x] for x in xs), axis=1)

    def op(self, op: str, x: str, name: str, **attrs) -> str:
        return self._add(op, [x], name, self.width[x], **attrs)

    def gemm(self, x: str, cout: int, name: str) -> str:
        w = self.const(f"{name}.w", self.rng.normal(size=(cout, self.width[x])) * 0.1)
        return self._add("Gemm", [x, w], name, cout, transB=1)

    def model(self, *outputs: str) -> onnx.ModelProto:
        return make_model(self.nodes, [self.input], list(outputs), self.inits)


def starred(model: onnx.ModelProto) -> tuple[str, str]:
    """(the starred node's output, its reason); exactly one node is starred."""
    infos = [i for i in graph.list_nodes(model) if i.candidate]
    assert len(infos) == 1, [(i.name, i.candidate) for i in infos]
    return infos[0].outputs[0], infos[0].candidate


def backbone(n: Net) -> list[str]:
    """Three stages (64, 32, 16 px; 16, 32, 64 channels): the stage outputs."""
    c1 = n.block(n.block("x", 16, "e1a"), 16, "e1")
    c2 = n.block(n.block(n.pool(c1, "p1"), 32, "e2a"), 32, "e2")
    c3 = n.block(n.block(n.pool(c2, "p2"), 64, "e3a"), 64, "e3")
    return [c1, c2, c3]


def test_plain_classifier_pre_logits():
    n = Net()
    *_, c3 = backbone(n)
    flat = n.op("Flatten", n.op("GlobalAveragePool", c3, "gap"), "flat")
    logits = n.gemm(n.relu(n.gemm(flat, 32, "fc1"), "fc1.relu"), 10, "logits")
    assert starred(n.model(n.op("Softmax", logits, "prob"))) == (
        "fc1.relu",
        "pre-logits: the features the final linear classifier reads",
    )


def test_conv_classifier_pre_logits():
    """A 1x1 class convolution whose maps are pooled (mini-Xception) is a classifier too."""
    n = Net()
    *_, c3 = backbone(n)
    maps = n.conv(c3, 7, "classes", k=1)
    pooled = n.op("GlobalAveragePool", maps, "gap")
    out = n.op("Softmax", n.op("Flatten", pooled, "flat"), "prob")
    assert starred(n.model(out))[0] == "e3"


def test_unet_bottleneck_before_the_first_upsampling():
    n = Net()
    c1, c2, c3 = backbone(n)
    bott = n.block(n.block(n.pool(c3, "p3"), 128, "b1"), 128, "bott")
    d3 = n.block(n.concat([n.up(bott, "u3"), c3], "cat3"), 64, "d3")
    d2 = n.block(n.concat([n.up(d3, "u2"), c2], "cat2"), 32, "d2")
    d1 = n.block(n.concat([n.up(d2, "u1"), c1], "cat1"), 16, "d1")
    out = n.op("Sigmoid", n.conv(d1, 1, "seg", k=1), "mask")
    tensor, reason = starred(n.model(out))
    assert tensor == "bott" and reason.startswith("bottleneck: the widest map (128 channels)")


def test_unet_whose_first_decoder_block_concatenates_at_the_bottleneck_resolution():
    """CRAFT: the deepest encoder map is concatenated with a skip of the same resolution and
    narrowed before the first upsampling; the encoder output is the deep concatenated input."""
    n = Net()
    c1, c2, c3 = backbone(n)
    c4 = n.block(n.block(n.pool(c3, "p3"), 128, "e4a"), 128, "e4")
    fc7 = n.block(n.block(c4, 256, "fc6"), 256, "fc7")
    d4 = n.block(n.block(n.concat([fc7, c4], "cat4"), 128, "d4a"), 64, "d4")
    d3 = n.block(n.concat([n.up(d4, "u3"), c3], "cat3"), 32, "d3")
    out = n.conv(n.up(d3, "u2"), 2, "regions", k=1)
    assert starred(n.model(out))[0] == "fc7"


def test_fpn_detector_backbone_output_before_the_lateral_convolutions():
    """Backbone + FPN (1x1 laterals, top-down upsampling) + two heads on the fused map: the
    heads' shared tensor lies after an upsampling, so the candidate is the backbone's output."""
    n = Net()
    _, c2, c3 = backbone(n)
    lat3 = n.conv(c3, 16, "lat3", k=1)
    lat2 = n.conv(c2, 16, "lat2", k=1)
    fused = n.add(n.up(lat3, "up3"), lat2, "fused")
    cls = n.conv(n.block(fused, 16, "cls_tower"), 4, "cls", k=1)
    box = n.conv(n.block(fused, 16, "box_tower"), 4, "box", k=1)
    tensor, reason = starred(n.model(cls, box))
    assert tensor == "e3" and reason.startswith("bottleneck:")


def test_aspp_image_pooling_branch_is_not_a_lower_resolution():
    """DeepLabV3: the ASPP's image-pooling branch pools the backbone map to 1x1 and resizes it
    back (a broadcast, not an upsampling of a map); the backbone's output stays the candidate."""
    n = Net()
    *_, c3 = backbone(n)
    near = n.block(c3, 32, "aspp.1x1")
    far = n.block(c3, 32, "aspp.3x3")
    pooled = n.block(n.op("GlobalAveragePool", c3, "aspp.pool"), 32, "aspp.pool.conv")
    scales = n.const("aspp.pool.scales", [1, 1, 16, 16])
    spread = n._add("Resize", [pooled, "", scales], "aspp.pool.up", 32, mode="nearest")
    fused = n.block(n.concat([near, far, spread], "aspp.cat"), 32, "aspp.project")
    out = n.conv(n.up(n.up(fused, "up1"), "up2"), 5, "classes", k=1)
    tensor, reason = starred(n.model(out))
    assert tensor == "e3" and reason.startswith("bottleneck: the widest map (64 channels)")


def test_multiscale_heads_share_the_deepest_backbone_map():
    """BlazeFace: anchor heads on two backbone levels, each output concatenating both levels;
    the deepest tensor both outputs read is the last backbone map (after its activation)."""
    n = Net()
    _, c2, c3 = backbone(n)
    outs = []
    for head in ("reg", "cls"):
        a = n.op("Flatten", n.conv(c2, 4, f"{head}16", k=1), f"{head}16.flat")
        b = n.op("Flatten", n.conv(c3, 4, f"{head}8", k=1), f"{head}8.flat")
        outs.append(n.concat([a, b], head))
    tensor, reason = starred(n.model(*outs))
    assert tensor == "e3" and reason.startswith("trunk: the deepest tensor all 2 outputs share")


def test_trunk_is_the_block_output_not_a_pooling_shortcut_or_an_expansion():
    """Face mesh: two heads each open with their own strided block whose shortcut is a shared
    max-pooling of the trunk (not deeper than the trunk). BlazePose: the heads branch inside an
    inverted residual, after its 4x expansion: the block output before it is more compact."""
    n = Net()
    *_, c3 = backbone(n)
    shortcut = n.pool(c3, "shortcut")
    outs = []
    for head in ("mesh", "flag"):
        body = n.conv(c3, 64, f"{head}.down", stride=2)
        merged = n.relu(n.add(shortcut, body, f"{head}.add"), f"{head}.relu")
        outs.append(n.op("Flatten", n.conv(merged, 3, f"{head}.out", k=1), f"{head}"))
    assert starred(n.model(*outs))[0] == "e3"

    n = Net()
    *_, c3 = backbone(n)
    res = n.add(n.conv(c3, 64, "res.conv"), c3, "block_out")
    expanded = n.block(n.block(res, 256, "expand"), 256, "depthwise")
    heat = n.conv(n.up(n.conv(expanded, 8, "heat.narrow", k=1), "heat.up"), 1, "heatmap", k=1)
    reg = n.op("Flatten", n.conv(n.pool(expanded, "reg.pool"), 6, "reg", k=1), "landmarks")
    assert starred(n.model(heat, reg))[0] == "block_out"


def test_residual_stage_ends_at_its_last_merge_and_gates_are_not_a_resolution():
    """Selfie segmentation (MobileNetV3 + LR-ASPP): a stage of residual blocks with squeeze-
    excitation gates at the lowest resolution, then a head that widens the map (1x1 conv gated
    by a pooled branch) before upsampling. The 1x1 gate maps are not the lowest resolution, the
    head's wider map is not the backbone: the last residual merge is."""
    n = Net()
    *_, c3 = backbone(n)
    x = n.conv(n.pool(c3, "p3"), 32, "entry", k=1)
    for i in range(3):
        h = n.block(x, 96, f"b{i}.expand")
        gate = n.op(
            "Sigmoid",
            n.conv(n.op("GlobalAveragePool", h, f"b{i}.se.pool"), 96, f"b{i}.se.fc", k=1),
            f"b{i}.se.gate",
        )
        x = n.add(n.conv(n.mul(h, gate, f"b{i}.se"), 32, f"b{i}.project", k=1), x, f"b{i}.add")
    wide = n.block(x, 128, "head.wide")
    attn = n.op(
        "Sigmoid",
        n.conv(n.op("GlobalAveragePool", x, "head.pool"), 128, "head.fc", k=1),
        "head.gate",
    )
    seg = n.conv(n.up(n.mul(wide, attn, "head.mul"), "head.up"), 1, "mask", k=1)
    tensor, reason = starred(n.model(seg))
    assert tensor == "b2.add" and reason.startswith("bottleneck: the last residual block")


def test_spatial_size_is_read_by_each_tensors_channel_axis():
    """TFLite-converted graphs transpose maps to NHWC around some ops: a narrow NHWC map at a
    higher resolution ([1, 16, 16, 2]) is not mistaken for a lower resolution than 8x8."""
    n = Net()
    *_, c3 = backbone(n)
    squeezed = n.conv(c3, 2, "squeeze", k=1)
    nhwc = n.op("Relu", n.op("Transpose", squeezed, "to_nhwc", perm=[0, 2, 3, 1]), "nhwc_relu")
    back = n.op("Transpose", nhwc, "to_nchw", perm=[0, 3, 1, 2])
    n.width[back] = 2
    bott = n.block(n.pool(n.block(back, 64, "e4a"), "p4"), 64, "bott")
    out = n.conv(n.up(n.conv(bott, 8, "narrow", k=1), "u"), 1, "mask", k=1)
    assert starred(n.model(out))[0] == "bott"


def test_a_feature_extractor_without_head_or_decoder_stars_its_output():
    n = Net()
    *_, c3 = backbone(n)
    assert starred(n.model(c3)) == (
        "e3",
        "graph output: no classifier, shared trunk or decoder found",
    )


@pytest.mark.parametrize("path", sorted(BENCHMARK_ENCODERS.glob("*.onnx")), ids=lambda p: p.stem)
def test_benchmark_models_star_their_encoder(path):
    """The mini-Taskonomy benchmark's 22 committed models (PyTorch and Keras: encoder + task
    decoder or classifier) name their encoder tensor `encoder`; the ★ was not tuned on them."""
    model = graph.load(path)
    tensor, reason = starred(model)
    assert same_encoder(model, tensor, "encoder"), (tensor, reason)
