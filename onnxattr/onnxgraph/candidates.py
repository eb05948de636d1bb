"""Which node is the encoder output? The ★ of `onnxattr nodes`, decided from the graph's structure.

The paper truncates each model where its features are most compact: before the classifier, at
the trunk a multi-head model shares, or at the bottleneck of an encoder-decoder. Three rules, in
this order, each a structural pattern rather than a list of known models:

1. **pre-logits** — every output ends in a linear classifier (a fully connected layer, or a conv
   whose class maps are pooled) reading one same tensor: that tensor.
2. **trunk** — several outputs (heads) that share no upsampled decoder: the deepest tensor they
   all depend on, stepped back to the most compact map of its block (an inverted residual's
   expansion is not the block's output).
3. **bottleneck** — an encoder-decoder, U-Net, FPN/PAN detector or side-output network: on the
   main path into the first upsampling (the dominators, and the inputs of concatenations on it),
   the lowest-resolution maps. A stage of residual blocks (each block's skip is the previous
   block's residual merge) ends at its last residual merge;
   otherwise the backbone ends at its widest map before the neck or decoder narrows it (a lateral
   1x1 conv, a U-Net's first decoder block).

Squeeze-excitation and other attention gates (maps pooled to 1x1 that only re-enter by
broadcasting) are never taken for the lowest resolution, and each map's spatial size is read by
its own channel axis (TFLite/Keras graphs mix NHWC and NCHW tensors).
"""

from __future__ import annotations

import numpy as np
import onnx

from ..optypes import (
    ELRP_NONLINEARITIES,
    GLOBAL_POOLING,
    LINEAR,
    METADATA,
    NO_DEPTH,
    UPSAMPLING,
    VIEWS,
)
from .layout import channel_axes, input_layout
from .nodes import NodeInfo, static_shape

_ROOT = -1  # the graph input, as a predecessor
_BROADCAST = frozenset({"Mul", "Add", "Sub", "Div"})


class _Structure:
    """The data-flow graph of a model's live nodes (those on a path from the input to an output),
    without shape computations, with per-node shape facts."""

    def __init__(self, model: onnx.ModelProto, infos: list[NodeInfo]) -> None:
        inits = {i.name for i in model.graph.initializer}
        source = {i.name for i in model.graph.input if i.name not in inits}
        outputs = {o.name for o in model.graph.output}
        on_path = [i for i in infos if i.on_input_path]
        producer = {o: k for k, n in enumerate(on_path) for o in n.outputs if o}
        # shape computations (Shape/Size and what is computed from them only) carry no features
        shape_only: set[int] = set()
        for k, n in enumerate(on_path):
            live_in = [producer[t] for t in n.inputs if t in producer]
            if n.op_type in METADATA or (
                live_in
                and all(p in shape_only for p in live_in)
                and not any(t in source for t in n.inputs)
            ):
                shape_only.add(k)
        # keep the nodes an output depends on (the zoo's and exporters' dangling views go)
        used: set[int] = set()
        stack = [producer[o] for o in outputs if o in producer]
        while stack:
            k = stack.pop()
            if k in used or k in shape_only:
                continue
            used.add(k)
            stack.extend(producer[t] for t in on_path[k].inputs if t in producer)
        keep = sorted(used)
        index = {old: new for new, old in enumerate(keep)}
        self.nodes = [on_path[k] for k in keep]
        self.preds: list[list[int]] = []
        for n in self.nodes:
            ps = [
                index[producer[t]] if t in producer else _ROOT
                for t in n.inputs
                if (t in producer and producer[t] in index) or t in source
            ]
            self.preds.append(list(dict.fromkeys(ps)))
        self.consumers: list[list[int]] = [[] for _ in self.nodes]
        for k, ps in enumerate(self.preds):
            for p in ps:
                if p != _ROOT:
                    self.consumers[p].append(k)
        self.is_output = [any(o in outputs for o in n.outputs) for n in self.nodes]
        self.input_shape = next(
            (static_shape(i) for i in model.graph.input if i.name in source), None
        )
        self._layout(model)
        self._ancestors()
        self._dominators()

    # ------------------------------------------------------------------ per-node facts
    def shape(self, k: int) -> list[int | None] | None:
        s = self.nodes[k].shapes[0] if self.nodes[k].shapes else None
        return s if s and all(d is not None for d in s[1:]) else None

    def numel(self, k: int) -> int | None:
        s = self.shape(k)
        return int(np.prod(s[1:])) if s else None

    def channels(self, k: int) -> int | None:
        s = self.shape(k)
        return s[self.axis[k]] if s and len(s) == 4 and self.axis[k] is not None else None

    def area(self, k: int) -> int | None:
        """Spatial size of a 4-D map, read by its own channel axis."""
        c, n = self.channels(k), self.numel(k)
        return n // c if c and n is not None else None

    def _layout(self, model: onnx.ModelProto) -> None:
        """Channel axis of every 4-D output, by the one layout rule (`layout.channel_axes`)."""
        axes = channel_axes(model, 3 if input_layout(self.input_shape) == "nhwc" else 1)
        self.axis: list[int | None] = []
        for k, n in enumerate(self.nodes):
            shape = self.shape(k)
            found = axes.get(n.outputs[0]) if n.outputs else None
            self.axis.append((found.axis if found else 1) if shape and len(shape) == 4 else None)

    def _ancestors(self) -> None:
        self.anc: list[int] = []  # bitsets of node indices
        self.depth: list[int] = []  # longest path, counting ops that add depth
        self.linear_depth: list[int] = []  # longest path, counting linear layers only
        for k, n in enumerate(self.nodes):
            ps = [p for p in self.preds[k] if p != _ROOT]
            bits = 0
            for p in ps:
                bits |= self.anc[p] | (1 << p)
            self.anc.append(bits)
            self.depth.append(
                max((self.depth[p] for p in ps), default=0) + (n.op_type not in NO_DEPTH)
            )
            self.linear_depth.append(
                max((self.linear_depth[p] for p in ps), default=0) + (n.op_type in LINEAR)
            )
        self.upsampling = [self._raises_resolution(k) for k in range(len(self.nodes))]
        # nodes with an upsampling op among their ancestors (they lie in a decoder)
        up_bits = sum(1 << k for k, u in enumerate(self.upsampling) if u)
        self.after_upsampling = [bool(self.anc[k] & up_bits) for k in range(len(self.nodes))]
        # gates: maps that only re-enter by broadcasting onto a larger one (squeeze-excitation)
        self.gate = [False] * len(self.nodes)
        for k in reversed(range(len(self.nodes))):
            if self.is_output[k] or not self.consumers[k] or self.numel(k) is None:
                continue
            self.gate[k] = all(
                self.gate[c]
                or (self.nodes[c].op_type in _BROADCAST and (self.numel(c) or 0) > self.numel(k))
                for c in self.consumers[k]
            )

    def _raises_resolution(self, k: int) -> bool:
        """An upsampling of a map: not a Resize used to shrink, nor the broadcast of a globally
        pooled 1x1 vector back over a map (DeepLab's and PSPNet's image-pooling branch). Keras'
        UpSampling2D reaches ONNX as Unsqueeze/Tile/Reshape: a Tile that repeats a map counts."""
        op = self.nodes[k].op_type
        src = next((p for p in self.preds[k] if p != _ROOT), None)
        if op == "Tile" and src is not None:
            n_in, n_out = self.numel(src), self.numel(k)
            return (
                bool(n_in and n_out and n_out > n_in)
                and (self.area(self.computing_op(src)) or 0) > 1
            )
        if op not in UPSAMPLING:
            return False
        a_in, a_out = (self.area(src) if src is not None else None), self.area(k)
        return a_in is None or a_out is None or a_out > a_in > 1

    def _dominators(self) -> None:
        """Immediate dominators with respect to the graph input (every path from the input to a
        node passes through its dominators)."""
        self.idom: list[int] = []
        self.dom_depth: list[int] = []
        for k in range(len(self.nodes)):
            ps = self.preds[k]
            d = ps[0] if ps else _ROOT
            for p in ps[1:]:
                d = self._meet(d, p)
            self.idom.append(d)
            self.dom_depth.append(0 if d == _ROOT else self.dom_depth[d] + 1)

    def _meet(self, a: int, b: int) -> int:
        while a != b:
            if a == _ROOT or b == _ROOT:
                return _ROOT
            if self.dom_depth[a] >= self.dom_depth[b]:
                a = self.idom[a]
            else:
                b = self.idom[b]
        return a

    def dominators(self, k: int) -> list[int]:
        out, d = [], self.idom[k]
        while d != _ROOT:
            out.append(d)
            d = self.idom[d]
        return out

    def dominates(self, a: int, b: int) -> bool:
        return a in self.dominators(b)

    def data_input(self, k: int) -> int | None:
        ps = self.preds[k]
        return ps[0] if len(ps) == 1 and ps[0] != _ROOT else None

    def computing_op(self, k: int) -> int:
        """Step back through pure views to the op that computes the values."""
        while self.nodes[k].op_type in VIEWS and (p := self.data_input(k)) is not None:
            k = p
        return k

    def terminal_outputs(self) -> list[int]:
        """Output nodes no other output depends on (an output that is also an intermediate
        feature, like CRAFT's `features`, is not a head)."""
        outs = [k for k, o in enumerate(self.is_output) if o]
        return [k for k in outs if not any(self.anc[j] >> k & 1 for j in outs if j != k)]


def mark_candidates(model: onnx.ModelProto, infos: list[NodeInfo]) -> None:
    """Set `candidate` (the reason) on the one node the rules above suggest as encoder output."""
    for info in infos:
        info.candidate = ""
    g = _Structure(model, infos)
    if not g.nodes:
        return
    for rule in (_pre_logits, _trunk, _bottleneck):
        found = rule(g)
        if found is not None:
            k, reason = found
            g.nodes[k].candidate = reason
            return
    g.nodes[-1].candidate = "graph output: no classifier, shared trunk or decoder found"


def _pre_logits(g: _Structure) -> tuple[int, str] | None:
    """Every terminal output is a linear classifier's (+ bias, softmax, views) reading one tensor."""
    read: set[int] = set()
    for k in g.terminal_outputs():
        pooled = False
        for _ in range(len(g.nodes)):
            n, src = g.nodes[k], g.data_input(k)
            if src is None:  # a merge of several tensors, or the graph input: not a classifier
                return None
            if n.op_type in {"Gemm", "MatMul"} or (n.op_type == "Conv" and pooled):
                read.add(src)  # a fully connected layer (constant weights), or class maps pooled
                break
            if n.op_type in GLOBAL_POOLING:
                pooled = True
            elif n.op_type in LINEAR or g.upsampling[k]:
                return None
            k = src
    if len(read) != 1:
        return None
    return read.pop(), "pre-logits: the features the final linear classifier reads"


def _trunk(g: _Structure) -> tuple[int, str] | None:
    """The deepest tensor every head depends on, when it lies before any upsampling."""
    heads = g.terminal_outputs()
    if len(heads) < 2:
        return None
    common = ~0
    for k in heads:
        common &= g.anc[k]
    shared = [k for k in range(len(g.nodes)) if common >> k & 1 and not g.is_output[k]]
    if not shared:
        return None
    k = max(shared, key=lambda j: (g.depth[j], -j))  # a pooling shortcut is not deeper
    if g.upsampling[k] or g.after_upsampling[k]:
        return None  # the heads read a decoder/neck: its input is a bottleneck, not a trunk
    k = _most_compact_of_block(g, g.computing_op(k))
    return k, (
        f"trunk: the deepest tensor all {len(heads)} outputs share (the heads branch after it)"
    )


def _most_compact_of_block(g: _Structure, k: int) -> int:
    """`k`, or the merge/fork that opens its block when that map is smaller: walking back through
    a single-input chain at the same resolution (an inverted residual's expansion and depthwise
    conv) to the block boundary, the boundary wins unless it is larger (ties keep `k`)."""
    cur, area = k, g.area(k)
    while (p := g.data_input(cur)) is not None and g.area(p) == area:
        cur = p
        if len(g.preds[p]) > 1 or len(g.consumers[p]) > 1:  # the block's merge or fork
            nk, np_ = g.numel(k), g.numel(p)
            return p if nk is not None and np_ is not None and np_ < nk else k
    return k


def _residual_skip(g: _Structure, k: int) -> int | None:
    """For an Add of a tensor and what some layers computed from it (a residual merge), that
    tensor (stepped back through element-wise activations); else None."""
    ps = [p for p in g.preds[k] if p != _ROOT]
    if g.nodes[k].op_type != "Add" or len(ps) != 2 or g.numel(ps[0]) != g.numel(ps[1]):
        return None
    a, b = sorted(ps, key=lambda j: g.dom_depth[j])
    if not (g.dominates(a, b) and g.linear_depth[b] > g.linear_depth[a]):
        return None
    while g.nodes[a].op_type in ELRP_NONLINEARITIES and (p := g.data_input(a)) is not None:
        a = p
    return a


def _block_output(g: _Structure, k: int) -> bool:
    """A block's merge (Add of branches from one fork, one or both through layers: residual or
    projection shortcut), or the activation right after it."""
    if g.nodes[k].op_type in ELRP_NONLINEARITIES and (p := g.data_input(k)) is not None:
        k = p
    ps = [p for p in g.preds[k] if p != _ROOT]
    if g.nodes[k].op_type != "Add" or len(ps) < 2 or any(g.gate[p] for p in ps):
        return False
    fork = g.idom[k]
    base = g.linear_depth[fork] if fork != _ROOT else 0
    return any(g.linear_depth[p] > base for p in ps)


def _bottleneck(g: _Structure) -> tuple[int, str] | None:
    """The backbone's last map at the lowest resolution on the main path into the decoder."""
    first_up = [k for k, u in enumerate(g.upsampling) if u and not g.after_upsampling[k]]
    if not first_up:
        return None
    main: set[int] = set()
    for u in first_up:
        main.update(g.dominators(u))
    for k in list(main):  # a concatenation only groups its inputs: they are on the path too
        if g.nodes[k].op_type == "Concat":
            main.update(p for p in g.preds[k] if p != _ROOT)
    # maps only: not gates, not globally pooled 1x1 vectors (a summary is not a resolution)
    maps = [k for k in sorted(main) if not g.gate[k] and (g.area(k) or 0) > 1]
    if not maps:
        return None
    lowest = min(g.area(k) for k in maps)
    plateau = [k for k in maps if g.area(k) == lowest]
    # a stage of residual blocks: residual merges whose skip is the previous block's merge
    merges = {k for k in plateau if _residual_skip(g, k) is not None}
    stage = [k for k in sorted(merges) if _residual_skip(g, k) in merges]
    if stage:
        k = stage[-1]
        if len(g.consumers[k]) == 1 and g.nodes[(c := g.consumers[k][0])].op_type in (
            ELRP_NONLINEARITIES
        ):
            k = c
        why = "the last residual block's output"
    else:
        widths = [(g.channels(k), k) for k in plateau if g.nodes[k].op_type != "Concat"]
        widest = max(w for w, _ in widths)
        top = [j for w, j in widths if w == widest]
        # at equal width, a block ends at its merge (+ activation): a decoder's first conv that
        # keeps the width is not the encoder
        ends = [j for j in top if _block_output(g, j)]
        k = max(ends or top)
        why = f"the widest map ({widest} channels)"
    k = g.computing_op(k)
    return k, (f"bottleneck: {why} at the lowest resolution, before the decoder/neck upsamples")
