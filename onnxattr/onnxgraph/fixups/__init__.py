"""Fix-up passes that make real exported ONNX graphs convertible by onnx2torch.

Each pass looks for one problem seen in real exports, changes the graph only where it finds it,
and returns what it changed as :class:`Fix` records (a stable ``code``, a ``count``, a message for
people, and details); :func:`fix_up` runs the registered passes in their declared ``order``:

10 constant-weights  Constant nodes -> initializers, nodes computed from constants only folded
                     (onnx2torch reads weights from initializers only).
20 quantized         constant DequantizeLinear/QuantizeLinear folded, QDQ pairs on activations reduced
                     to their clamp, dynamic int8 MatMulInteger/ConvInteger and QLinearConv/MatMul
                     (constant weights) turned back into float Conv/MatMul.
30 explicit-pads     auto_pad=SAME_*/VALID -> explicit pads for the static input size; asymmetric
                     ConvTranspose pads -> symmetric pads + Slice, asymmetric AveragePool pads ->
                     Pad + AveragePool (+ count correction) (onnx2torch rejects all three).
40 reshape           allowzero=1 -> 0 where the shape has no 0 (same result; onnx2torch rejects 1).
45 depth-to-space    DepthToSpace in DCR mode -> Reshape/Transpose/Reshape (onnx2torch: CRD only).
50 batch             batch size baked into Reshape shape constants -> 0 ("copy the input's dim"),
                     batch-1 constants concatenated to batched tensors -> Expand, a static batch dim
                     on the graph input relaxed; verified on onnxruntime at batch 2, else reverted
                     (code ``single-image``: the pipeline then attributes one image at a time).
60 shapes            tensors without a rank after ONNX shape inference get value_info (shape inference
                     with data propagation, then onnxruntime on a dummy input).

The registry and the :class:`Fix` records live in ``_registry``, the graph-editing helpers every
pass shares in ``edits``, each pass in a module of its own; importing this package registers them
all. A new pass is one decorated function (in a new module imported below, or anywhere imported
before :func:`fix_up` runs), placed by its order among these::

    @register_fixup("my-pass", order=35, description="what it rewrites and why")
    def my_pass(model: onnx.ModelProto, dims: list[int] | None) -> list[Fix]:
        ...  # mutate model in place where needed
        return [Fix("my-code", n, f"{n} nodes rewritten")] if n else []
"""

# each pass registers itself when its module is imported
from . import batch, constant_weights, depth_to_space, explicit_pads, quantized, reshape, shapes  # noqa: F401
from ._registry import (
    FIXUPS,
    SINGLE_IMAGE,
    Fix,
    FixupFn,
    FixupPass,
    fix_up,
    list_fixups,
    register_fixup,
)

__all__ = ["FIXUPS", "SINGLE_IMAGE", "Fix", "FixupFn", "FixupPass", "fix_up", "list_fixups", "register_fixup"]
