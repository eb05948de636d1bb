"""`onnxattr` command line: a thin layer over the Python API, one module per stage."""

from . import analysis_cmds, demo_cmds, rules_cmds, space_cmds, zoo_cmds  # noqa: F401  (register)
from ._app import app

__all__ = ["app"]
