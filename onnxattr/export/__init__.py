"""Getting a model into ONNX with a named encoder tensor, checked against the original framework.

`torch_export`: torch.onnx.export with the encoder tensor named ``encoder`` (the zoo's torch
recipes, the benchmark's task networks). `tf`: tf2onnx in a worker process (`tf_worker`), because
TensorFlow and torch in one process segfault. Nothing here is imported by ``import onnxattr``.
"""
