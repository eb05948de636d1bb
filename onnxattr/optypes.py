"""ONNX op-type vocabularies, in one place (as Zennit's ``types.py``): what each stage treats alike.

The sets differ on purpose where the stages ask different questions; each says which question.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- linear ops
#: Ops linear in their activation input given constant weights: the LRP rules that need weights
#: (z⁺, αβ, flat, w², z^B) apply to these; ``first`` in a rule table means the nearest one(s).
LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
LINEAR = frozenset(LINEAR_OPS)
#: Linear ops a following BatchNormalization is merged into before LRP (canonizer).
BN_MERGEABLE = frozenset({"Conv", "ConvTranspose", "Gemm"})
#: Ops whose output is a product of their inputs (LRP splits relevance uniformly between two
#: activation inputs).
MULTIPLICATIVE = frozenset({"Mul", "MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"})

# --------------------------------------------------------------------------- element-wise maps
#: Element-wise nonlinearities whose gradient ε-LRP (the paper's ``elrp``, DeepExplain's
#: formulation) replaces by f(z)/(z + ε·sign z).
ELRP_NONLINEARITIES = frozenset(
    {
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "Tanh",
        "Softplus", "Softsign", "HardSwish", "Clip", "Gelu", "Mish", "ThresholdedRelu",
    }
)  # fmt: skip
#: Element-wise ops the LRP rule table lets relevance pass through unchanged ("pass"): the
#: nonlinearities above plus Neg/Erf and the maps met in decomposed normalisations (variance,
#: √, 1/x).
LRP_PASS = (
    "Relu", "Clip", "LeakyRelu", "PRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu",
    "Selu", "Celu", "Gelu", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Neg", "Erf",
    "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Abs",
)  # fmt: skip
#: Ops that move or select values by position: LRP uses their own gradient.
BY_POSITION = (
    "Concat", "Split", "Slice", "Reshape", "Flatten", "Transpose", "Pad", "Resize", "Squeeze",
    "Unsqueeze", "Identity", "Dropout", "Cast", "Gather", "Expand", "Tile", "Upsample",
    "DepthToSpace", "SpaceToDepth",
)  # fmt: skip
#: Gates in products (sigmoid-like, softmax; Erf: GELU as x·(1 + erf(x/√2))/2): they take no
#: relevance in LRP.
GATES = frozenset({"Sigmoid", "HardSigmoid", "Softmax", "Erf"})
#: Ops that only reshape (LRP looks through them to find a product's gate).
SHAPE_ONLY = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Tile",
                        "Identity", "Cast"})  # fmt: skip
#: Element-wise affine ops with possibly constant operands (input normalisation x·s − m).
ELEMENTWISE_AFFINE = frozenset({"Add", "Sub", "Mul", "Div"})
#: Ops with integer outputs describing shapes: never on the relevance path.
METADATA = frozenset({"Shape", "Size"})
#: Ops whose output is >= 0, and ops that keep an input's sign (z⁺/αβ skip the x⁻ terms then).
NONNEGATIVE = frozenset({"Relu", "Sigmoid", "HardSigmoid", "Softmax"})
SIGN_KEEPING = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                          "ReduceMean", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
                          "Concat", "Slice", "Split", "Resize", "Identity", "Dropout"})  # fmt: skip

# --------------------------------------------------------------------------- graph rewriting
#: Layout ops a quantized tensor may pass between QuantizeLinear and DequantizeLinear (fix-ups).
QDQ_LAYOUT = frozenset({"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity",
                        "MaxPool"})
#: Ops with ``pads``/``auto_pad`` attributes (fix-ups make them explicit).
PADDED = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool")
# --------------------------------------------------------------------------- graph structure
#: Encoder-node candidates: ops that raise a map's resolution (counted only where they do) ...
UPSAMPLING = frozenset({"Resize", "Upsample", "ConvTranspose", "DepthToSpace"})
#: ... ops that summarise a whole map into one vector (a classifier's pooling) ...
GLOBAL_POOLING = frozenset({"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"})
#: ... and ops that add no depth to a trunk: views, padding, local pooling (a pooling shortcut
#: taken beside a block is not deeper than the tensor it pools).
NO_DEPTH = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                      "Dropout", "Cast", "Pad", "MaxPool", "AveragePool"})  # fmt: skip
#: Pure views (the same values, rearranged): a candidate is reported at the op computing it.
VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                   "Dropout", "Cast"})  # fmt: skip
#: Ops whose 4-D output is channel-first by the ONNX specification.
CHANNEL_FIRST = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization",
    "InstanceNormalization", "LRN", "MaxUnpool", "DepthToSpace", "SpaceToDepth",
})  # fmt: skip
#: Ops after which an axis of the input no longer is the same axis of the output.
REARRANGING = frozenset({
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Gather", "GatherElements", "GatherND",
    "MatMul", "Gemm", "Einsum", "Expand", "Tile", "Shape", "Size", "ConstantOfShape",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "TopK", "NonZero",
})  # fmt: skip
