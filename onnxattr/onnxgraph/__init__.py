"""The ONNX stage: load and truncate an ONNX graph at an encoder node (``graph``, which lists nodes
and marks encoder candidates with ``candidates``; both build on ``nodes``), NCHW or NHWC decided
once from the graph (``layout``: the input's layout and every tensor's channel axis, read alike by
`add`'s features, `transfer`'s oracle and the candidates), rewrite what onnx2torch
cannot convert (``fixups``, one module per pass), extra opset converters for onnx2torch
(``converters``) and the conversion to a torch module verified against onnxruntime (``convert``)."""
