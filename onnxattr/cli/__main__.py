"""`python -m onnxattr.cli`: the `onnxattr` command of this checkout."""

from . import app

app(prog_name="onnxattr")
