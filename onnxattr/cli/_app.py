"""The typer application and the decorator that turns OnnxAttrError into a one-line error."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from ..errors import OnnxAttrError

# onnx2torch's Slice/ScatterND index with lists, which torch deprecates on every call: noise to users.
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")

app = typer.Typer(
    name="onnxattr",
    help="Label-free model transferability from attribution maps, for any ONNX model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def command(target: typer.Typer = app, **kwargs: Any) -> Callable:
    """Register a CLI command whose OnnxAttrError/OSError becomes `error: ...` and exit code 1."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return fn(*args, **kw)
            except (OnnxAttrError, FileNotFoundError) as exc:
                err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None

        return target.command(**kwargs)(wrapper)

    return decorate
