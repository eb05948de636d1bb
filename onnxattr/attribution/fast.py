"""The fast execution path of a converted encoder: BatchNormalization folded into the linear op before
it, channels-last memory, Pad's gradient as a view; chosen per model only where its maps equal the
exact path's and it is faster.

Folding uses the same merge as the LRP canonizer (`canonize.merge_batchnorms`: a BN right after a
Conv/ConvTranspose/Gemm with no other consumer), so every method keeps its semantics: gradient
methods and elrp see the same affine map, and LRP rules would merge exactly these BNs anyway. The
folded BN node is removed from the graph, so the LRP canonizer finds nothing left to merge. What a
rewrite cannot guarantee (float reassociation, an op that needs contiguous memory) the per-model
check catches: the first batch runs on both paths and the fast one is kept only if every map of
every image has cosine >= `MIN_COSINE` with the exact one. Nor does a rewrite always pay (channels-
last memory slowed mp_selfie_segmentation's attribution): `keep_faster` then times the next two
batches, one per path, and keeps the path that took less CPU time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from onnx2torch.node_converters.pad import OnnxPadDynamic, OnnxPadStatic
from torch import nn

from ..onnxgraph.convert import TorchNet
from .base import AttributionMethod, attribute
from .canonize import merge_batchnorms

MIN_COSINE = 0.9999
#: the clocks `keep_faster` compares paths by: this process's CPU time; on a GPU (asynchronous
#: kernels), wall time with the device synchronised
CPU_TIME, DEVICE_TIME = "CPU time", "wall time, device synchronised"


def fold_batchnorms(net: TorchNet) -> tuple[TorchNet, int]:
    """A copy of `net` with every mergeable BatchNormalization folded into its linear op (the BN
    node erased); `net` is unchanged. Returns the copy and the number of BNs folded."""
    module = copy.deepcopy(net.module)
    onnx_nodes = dict(net.onnx_nodes)
    replacements, merged = merge_batchnorms(net)
    for node in list(module.graph.nodes):
        if node.op != "call_module" or node.target not in merged:
            continue
        prev = node.args[0]
        node.replace_all_uses_with(prev)
        module.graph.erase_node(node)
        module.delete_submodule(node.target)
        del onnx_nodes[node.target]
        parent, _, attr = prev.target.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, attr, replacements[prev.target])
    module.graph.lint()
    module.recompile()
    return TorchNet(module=module, onnx_nodes=onnx_nodes), len(merged)


class _ChannelsLast(TorchNet):
    """A TorchNet whose 4-D input is handed over in channels-last memory (same values)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().__call__(x)


class _PadGradient(torch.autograd.Function):
    """Forward the padded `y`; backward the gradient's slice over x as a view. Torch's backward of
    a constant pad (a negative pad) copies it: 7 % of efficientnet_lite0's attribution, whose 17
    Pads before strided convolutions see three backward passes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor, begins: list[int]) -> torch.Tensor:
        ctx.region = list(zip(begins, x.shape))
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        for dim, (begin, size) in enumerate(ctx.region):
            if begin or grad.shape[dim] != size:
                grad = grad.narrow(dim, begin, size)
        return grad, None, None


class ConstantPad(nn.Module):
    """onnx2torch's Pad in constant mode, same values; its gradient a view (`_PadGradient`)."""

    def __init__(self, inner: OnnxPadStatic | OnnxPadDynamic) -> None:
        super().__init__()
        self.inner = inner

    @staticmethod
    def eligible(m: nn.Module) -> bool:
        return isinstance(m, (OnnxPadStatic, OnnxPadDynamic)) and m.mode == "constant"

    def forward(self, x: torch.Tensor, *rest: Any) -> torch.Tensor:
        begins, ends = self._pads(x.dim(), rest)
        if not x.requires_grad or min(begins + ends) < 0:
            return self.inner(x, *rest)  # cropping, or nothing to differentiate: as converted
        with torch.no_grad():
            y = self.inner(x, *rest)
        return _PadGradient.apply(x, y, begins)

    def _pads(self, ndim: int, rest: tuple) -> tuple[list[int], list[int]]:
        """Padding before and after each dim."""
        if isinstance(self.inner, OnnxPadDynamic):  # ONNX order: begins of every dim, then ends
            pads = [int(p) for p in rest[0].tolist()]
            return pads[:ndim], pads[ndim:]
        begins, ends = [0] * ndim, [0] * ndim  # torch order: (begin, end) pairs from the last dim
        for k in range(len(self.inner.pads) // 2):
            begins[ndim - 1 - k], ends[ndim - 1 - k] = self.inner.pads[2 * k: 2 * k + 2]
        return begins, ends


def optimize(net: TorchNet, *, channels_last: bool = True) -> tuple[TorchNet, list[str]]:
    """The rewritten net and what was done to it (for the log and the stored metadata)."""
    fast, n_folded = fold_batchnorms(net)
    done = [f"{n_folded} BatchNormalization folded into Conv/Gemm"] if n_folded else []
    if channels_last:
        fast.module.to(memory_format=torch.channels_last)
        fast = _ChannelsLast(module=fast.module, onnx_nodes=fast.onnx_nodes)
        done.append("channels-last memory")
    pads = [name for name, m in fast.module.named_modules() if ConstantPad.eligible(m)]
    for name in pads:
        parent, _, attr = name.rpartition(".")
        owner = fast.module.get_submodule(parent) if parent else fast.module
        setattr(owner, attr, ConstantPad(getattr(owner, attr)))
    if pads:
        done.append(f"{len(pads)} Pad gradients as views")
    return fast, done


def per_image_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each image's map (two all-zero maps count as equal)."""
    a, b = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    num = (a * b).sum(1)
    den = a.norm(dim=1) * b.norm(dim=1)
    both_zero = (a.abs().amax(1) == 0) & (b.abs().amax(1) == 0)
    return torch.where(both_zero, torch.ones_like(num), num / den.clamp_min(1e-300))


@dataclass
class ExecutionPath:
    """Which net runs the attribution, and why: recorded in the model's metadata as `execution`."""

    net: TorchNet
    path: str  # "fast" or "exact"
    rewrites: list[str] = field(default_factory=list)
    min_cosine: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    #: seconds of one batch on each path ("exact", "fast"), where `keep_faster` timed them
    seconds: dict[str, float] = field(default_factory=dict)
    clock: str = ""  # what `seconds` measured
    check_seconds: float | None = None  # `choose_path`'s run of the fast net, where it had a clock

    def record(self) -> dict[str, Any]:
        return {"path": self.path, "rewrites": list(self.rewrites),
                "min_cosine": dict(self.min_cosine), "reason": self.reason,
                "seconds": dict(self.seconds), "clock": self.clock}

    def describe(self) -> str:
        if self.path == "fast":
            worst = min(self.min_cosine.values(), default=1.0)
            return (f"fast path ({', '.join(self.rewrites) or 'no rewrite applied'}): maps equal "
                    f"the exact path's on the first batch (min per-image cosine {worst:.6f}); "
                    f"{self.reason}")
        return f"exact path: {self.reason}"


def choose_path(
    net: TorchNet,
    x: torch.Tensor,
    methods: Sequence[AttributionMethod],
    exact_maps: dict[str, torch.Tensor],
    *,
    rewrite: Callable[[TorchNet], tuple[TorchNet, list[str]]] | None = None,
    clock: Callable[[], float] | None = None,
    references: Mapping[str, torch.Tensor] | None = None,
) -> ExecutionPath:
    """Rewrite `net` (`rewrite`, default `optimize`), run the batch `x` on it and keep it only if
    every method's map of every image has cosine >= MIN_COSINE with `exact_maps` (the exact path's
    maps of `x`); else the exact net. With `clock`, the run's seconds go in `check_seconds`;
    `references` as `attribute` takes them."""
    try:
        fast, rewrites = (rewrite or optimize)(net)
        if not rewrites:
            return ExecutionPath(net, "exact", reason="nothing to rewrite in this encoder")
        t0 = clock() if clock else 0.0
        maps = attribute(fast, x, methods, references=references)
        check_seconds = clock() - t0 if clock else None
    except Exception as exc:  # any failure of a rewrite means: not for this model
        return ExecutionPath(net, "exact", reason=f"the rewritten net fails ({type(exc).__name__}: "
                                                  f"{str(exc)[:200]}); fell back")
    cosines = {m: float(per_image_cosine(exact_maps[m], maps[m]).min()) for m in exact_maps}
    bad = {m: c for m, c in cosines.items() if not c >= MIN_COSINE}
    if bad:
        worst = ", ".join(f"{m} {c:.6f}" for m, c in bad.items())
        return ExecutionPath(net, "exact", rewrites, cosines,
                             reason=f"the fast path's maps differ from the exact path's (per-image "
                                    f"cosine {worst} < {MIN_COSINE}); fell back")
    return ExecutionPath(fast, "fast", rewrites, cosines, reason="not timed (too few images left)",
                         check_seconds=check_seconds)


def keep_faster(path: ExecutionPath, exact: TorchNet, timed_run: Callable[[TorchNet], float],
                images: int, clock: str = CPU_TIME, exact_first: float | None = None
                ) -> ExecutionPath:
    """The verified fast `path` or the `exact` net, whichever attributes a batch in less time.

    `timed_run(net)` attributes the next batch of `images` probe images with `net` (work that is
    kept, so timing costs nothing extra) and returns the seconds of that call by `clock` (process
    CPU time; on a GPU, `DEVICE_TIME`): exact first, then fast, both after a run of their own
    (warm). Each path's time is the smaller of that batch's and of its first batch's, where known
    (`exact_first`: the exact path's first batch; `path.check_seconds`: the check's run, same
    size): a spike in one run (a garbage collection, another process) then does not decide alone.
    Repeats vary less than the paths differ where it matters (mobilenet_v2, 2 images, three repeats
    under load: exact 0.171-0.179, fast 0.153-0.168 CPU s); efficientnet_lite0 (fast 0.78× per
    mode) still ran exact in one replay under load from one sample per path."""
    exact_s = min(timed_run(exact), exact_first if exact_first is not None else float("inf"))
    fast_s = min(timed_run(path.net), path.check_seconds if path.check_seconds is not None
                 else float("inf"))
    seconds = {"exact": exact_s, "fast": fast_s}
    timing = f"{fast_s:.3f} vs exact {exact_s:.3f} s ({clock}) on a batch of {images} probe images"
    if fast_s <= exact_s:
        return replace(path, reason=f"faster: {timing}", seconds=seconds, clock=clock)
    return ExecutionPath(exact, "exact", path.rewrites, path.min_cosine, seconds=seconds, clock=clock,
                         reason=f"the fast path's maps equal the exact path's but it is slower "
                                f"({timing}); kept exact")


__all__ = ["CPU_TIME", "DEVICE_TIME", "MIN_COSINE", "ConstantPad", "ExecutionPath", "choose_path",
           "fold_batchnorms", "keep_faster", "optimize", "per_image_cosine"]
