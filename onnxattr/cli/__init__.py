"""`onnxattr` command line: a thin layer over the Python API, one module per stage."""

from . import (  # noqa: F401  (register)
    analysis_cmds,
    demo_cmds,
    rules_cmds,
    space_cmds,
    transfer_cmds,
    zoo_cmds,
)
from ._app import app

__all__ = ["app"]
