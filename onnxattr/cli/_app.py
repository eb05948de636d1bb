"""The typer application and the decorator that turns every failure into a one-line error.

An OnnxAttrError is the user's to fix: its message says what to do. Any other exception is a
failure nobody foresaw: it is shown on one line too, with a hint to rerun with ``--debug`` (or
``ONNXATTR_DEBUG=1``) for the traceback.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import rich.table
import typer
from rich.console import Console
from rich.text import Text

from ..errors import OnnxAttrError, OnnxAttrWarning

# Click's usage errors pass through to typer (exit 2). typer >= 0.2x vendors click, so the class is
# taken from typer's own exceptions rather than from the `click` package, which may be absent.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

# onnx2torch's Slice/ScatterND index with lists, which torch deprecates on every call: noise to users.
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")

#: The panels of ``onnxattr --help``, in the order a user meets them; every command names one.
PANEL_BUILD = "Build a space"
PANEL_ANALYSE = "Analyse"
PANEL_CHECK = "Check and repair"
PANEL_ZOO = "Zoo and benchmark"
PANELS = (PANEL_BUILD, PANEL_ANALYSE, PANEL_CHECK, PANEL_ZOO)


class _PanelGroup(typer.core.TyperGroup):
    """Lists commands panel by panel in PANELS order (whatever order modules and plugins
    registered them in), keeping each panel's registration order."""

    def list_commands(self, ctx: Any) -> list[str]:
        def key(name: str) -> int:
            panel = getattr(self.commands[name], "rich_help_panel", None)
            return PANELS.index(panel) if panel in PANELS else len(PANELS)

        return sorted(super().list_commands(ctx), key=key)


app = typer.Typer(
    cls=_PanelGroup,
    name="onnxattr",
    help="Label-free model transferability from attribution maps, for any ONNX model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Literal output: model names, file paths, messages and install hints (`pip install -e '.[tf]'`)
# contain square brackets that rich would otherwise read as markup and drop. Style, where wanted,
# is given with rich.text.Text, never with markup in strings.
console = Console(markup=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
_debug = {"on": False}


class Table(rich.table.Table):
    """A rich table whose cells wrap (fold) instead of ending in '…': piped output, 80 columns
    wide, keeps every name, number and path whole. Every command's tables are these."""

    def add_column(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("overflow", "fold")
        super().add_column(*args, **kwargs)


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of unexpected errors."),
) -> None:
    """Label-free model transferability from attribution maps, for any ONNX model."""
    _debug["on"] = debug or os.environ.get("ONNXATTR_DEBUG", "") not in ("", "0")


#: API parameters whose CLI flag is not ``--`` + the name with dashes.
_FLAGS = {"mapping": "--map", "estimator": "--method", "estimators": "--method",
          "use_committed": "--committed", "json_out": "--json"}
#: Parameters of the library (beyond the public API functions') that messages may name.
_LIBRARY_PARAMS = {"on", "bootstrap", "preset", "scale", "mean", "std", "input_size", "layout",
                   "color", "replace", "lam", "method", "use_committed", "backup", "workers",
                   "address", "use_cache", "space", "overwrite", "out", "json_out", "teacher",
                   "teacher_node"}
#: Flags of parameters set to False (default: --no-NAME).
_NEGATED = {"use_cache": "--no-cache"}


def _api_params() -> set[str]:
    import inspect

    from .. import api

    names = set(_LIBRARY_PARAMS)
    for fn in (api.build_probe, api.add, api.affinity, api.rank, api.evaluate, api.report):
        names.update(inspect.signature(fn).parameters)
    return names


def cli_terms(message: str) -> str:
    """A library message in the CLI's terms: the API parameters it names in backticks become
    flags (`overwrite=True` -> --overwrite, `backup=False` -> --no-backup, `device=cpu` ->
    --device cpu, `encoder_node` -> --encoder-node); anything else in backticks (commands,
    code) stays as it is."""
    import re

    params = _api_params()

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if name not in params:
            return m.group(0)
        if value == "False":
            return _NEGATED.get(name, "--no-" + name.replace("_", "-"))
        f = _FLAGS.get(name, "--" + name.replace("_", "-"))
        return f if value is None or value == "True" else f"{f} {value}"

    return re.sub(r"`([a-z_]+)(?:=([^`\s]+))?`", flag, message)


def _error(message: str) -> None:
    """`error: ...` on one line, the message printed literally (paths may hold [brackets])."""
    text = " ".join(message.split())
    err_console.print(Text.assemble(("error:", "bold red"), " ", text), soft_wrap=True,
                      highlight=False)


def warn(message: str) -> None:
    """A one-line warning on stderr, printed literally, a library's in the CLI's terms."""
    err_console.print(Text("warning: ", style="yellow") + Text(cli_terms(message)), soft_wrap=True)


def command(target: typer.Typer = app, panel: str | None = None, **kwargs: Any) -> Callable:
    """Register a CLI command whose failures become one `error: ...` line and a non-zero exit.

    `panel` (one of PANELS) is the group it is listed under in ``--help``; commands of a
    sub-application (``probe build``) are grouped by their parent's panel and take none."""
    if panel is not None and panel not in PANELS:
        raise ValueError(f"panel {panel!r} is not one of {PANELS}")
    if panel is not None:
        kwargs["rich_help_panel"] = panel

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("always", OnnxAttrWarning)
                    shown = warnings.showwarning

                    def show(message, category, *rest) -> None:
                        # onnxattr's own warnings are messages for the user: one literal line
                        if issubclass(category, OnnxAttrWarning):
                            warn(str(message))
                        else:
                            shown(message, category, *rest)

                    warnings.showwarning = show
                    return fn(*args, **kw)
            except (OnnxAttrError, FileNotFoundError) as exc:
                _error(cli_terms(str(exc)))
                raise typer.Exit(1) from None
            except (typer.Exit, typer.Abort, _ClickException):
                raise
            except KeyboardInterrupt:
                _error("interrupted (nothing half-written is kept in the space)")
                raise typer.Exit(130) from None
            except Exception as exc:
                if _debug["on"]:
                    raise
                _error(f"{type(exc).__name__}: {exc} (unexpected; rerun with --debug, "
                       "e.g. `onnxattr --debug COMMAND ...`, for the traceback)")
                raise typer.Exit(1) from None

        return target.command(**kwargs)(wrapper)

    return decorate
