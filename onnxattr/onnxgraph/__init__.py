"""The ONNX stage: load and truncate an ONNX graph at an encoder node (``graph``), rewrite what
onnx2torch cannot convert (``fixups``), extra opset converters for onnx2torch (``converters``) and
the conversion to a torch module verified against onnxruntime (``convert``)."""
