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
  AveragePool-19/22 (dilations; asymmetric pads and DCR DepthToSpace are fix-ups, at every
  opset, not converters), BatchNormalization-7 (spatial attribute); where onnx2torch's own
  converter is wrong or missing for an older version: NonZero-9 (its NonZero-13 returns the
  transposed index matrix), Slice-1; plus ops onnx2torch has no
  converter for at all that exporters write for vision encoders: Gelu-20 (torch's dynamo exporter),
  GroupNormalization-18/21, GlobalMaxPool, SpaceToDepth, Upsample-7/9 (old exports).

Each converter is filed with onnx2torch by ``@register_converter(op, *versions)`` at its definition,
through onnx2torch's public ``add_converter``, when its module is imported; this package imports
one module per op family (``reduce``, ``resample``, ``pooling``, ``normalization``, ``layout``,
``activation``), each of which takes the decorator from ``_registry`` (never from this package), and
``convert`` imports the package. A new converter is one decorated function in
any module imported before conversion.
"""

from __future__ import annotations

import onnx
from onnx import defs
from onnx2torch.node_converters.registry import get_converter

from ...errors import OnnxAttrError
from ._registry import existing_converter, register_converter

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

for _op, _new, _old in _SAME_SIGNATURE + _OLD_SAME_SIGNATURE + _NEW_ATTRIBUTE_IRRELEVANT:
    register_converter(_op, _new)(existing_converter(_op, _old))


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


# the op families: importing them files their converters
from . import activation, layout, normalization, pooling, reduce, resample  # noqa: E402, F401
