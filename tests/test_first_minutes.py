"""Issue 18, the first five minutes: --help in panels, no cut cells in piped tables, one
default estimator everywhere, one rule for a combined estimator's distance, actionable errors."""

from __future__ import annotations

from typer.testing import CliRunner

from onnxattr.cli import PANELS, app

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_help_groups_every_command_in_panels_in_order():
    import typer.main

    group = typer.main.get_command(app)
    unpanelled = [n for n, c in group.commands.items() if c.rich_help_panel not in PANELS]
    assert not unpanelled, f"commands outside the --help panels: {unpanelled}"
    r = run("--help")
    assert r.exit_code == 0, r.output
    heads = [p for p in PANELS if f"─ {p} ─" in r.output]
    assert heads == list(PANELS)
    assert sorted(heads, key=r.output.index) == list(PANELS)
