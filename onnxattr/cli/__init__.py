"""`onnxattr` command line: a thin layer over the Python API, one module per stage.

Other packages add commands through the entry-point group ``onnxattr.commands``: each entry
names a function that takes the typer app (the zoo's `demo`, `taskonomy` and `zoo` come this
way, so the library never imports the zoo). `command`, `console` and `warn` are what such a
function uses to behave like the built-in commands (one-line errors, literal output).
"""

from importlib.metadata import entry_points

from . import (  # noqa: F401  (register)
    analysis_cmds,
    explore_cmds,
    rules_cmds,
    space_cmds,
    transfer_cmds,
)
from ._app import (
    PANEL_ANALYSE,
    PANEL_BUILD,
    PANEL_CHECK,
    PANEL_ZOO,
    PANELS,
    Table,
    app,
    command,
    console,
    warn,
)

#: The entry-point group of CLI plugins: ``name = "package.module:function"``, function(app).
PLUGIN_GROUP = "onnxattr.commands"


def _load_plugins() -> None:
    """Let every installed plugin add its commands; one that fails to load is a warning line
    (its commands are missing), never a broken CLI."""
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()(app)
        except Exception as exc:  # a broken or half-installed plugin must not take the CLI down
            warn(f"commands of {ep.name!r} ({ep.value}) not loaded: {type(exc).__name__}: {exc}")


_load_plugins()

__all__ = ["PANELS", "PANEL_ANALYSE", "PANEL_BUILD", "PANEL_CHECK", "PANEL_ZOO", "PLUGIN_GROUP", "Table", "app",
           "command", "console", "warn"]
