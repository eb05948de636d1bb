"""The layout's rules: dependencies run one way (the zoo uses the library, never the reverse), and
the zoo's commands reach the CLI through the entry-point group, not through an import."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

import typer
from typer.testing import CliRunner

import onnxattr.cli as cli
from onnxattr._compat import tomllib
from onnxattr.cli import PLUGIN_GROUP, app

ROOT = Path(__file__).resolve().parent.parent
ZOO_COMMANDS = ("demo", "taskonomy", "zoo")


def _zoo_imports(path: Path) -> list[str]:
    """`import model_zoo...`, `from model_zoo... import`, and import_module("model_zoo...") in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", ""))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names = [str(node.args[0].value)]
        else:
            continue
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno} {n}"
            for n in names
            if n == "model_zoo" or n.startswith("model_zoo.")
        ]
    return found


def test_the_library_never_imports_the_zoo():
    files = sorted(ROOT.glob("onnxattr/**/*.py"))
    assert len(files) > 40
    bad = [hit for f in files for hit in _zoo_imports(f)]
    assert not bad, bad


def test_the_scan_sees_every_form_of_import(tmp_path):
    """The scan above is not vacuous: each way of importing the zoo is caught."""
    probe = ROOT / "tests" / "_zoo_import_probe.py"
    probe.write_text(
        "import model_zoo\nfrom model_zoo.demo import run_demo\nimport importlib\n"
        "importlib.import_module('model_zoo.cli')\nfrom . import model_zoo_like\n"
    )
    try:
        hits = _zoo_imports(probe)
    finally:
        probe.unlink()
    assert [h.split(" ", 1)[1] for h in hits] == ["model_zoo", "model_zoo.demo", "model_zoo.cli"]


def test_zoo_commands_come_through_the_entry_point_group():
    """pyproject.toml declares them; the installed metadata has them (else: `pip install -e .`);
    `onnxattr --help` lists them."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared[PLUGIN_GROUP] == {"zoo": "model_zoo.cli:register"}
    installed = {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP)}
    assert installed.get("zoo") == "model_zoo.cli:register", (
        f"installed metadata lacks the {PLUGIN_GROUP} entry point: rerun `pip install -e .`"
    )
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0
    listed = {
        line.split()[1]
        for line in r.output.splitlines()
        if line.startswith("│ ") and len(line.split()) > 1
    }
    assert set(ZOO_COMMANDS) <= listed, r.output
    r = CliRunner().invoke(app, ["zoo", "--help"])
    assert r.exit_code == 0 and "list" in r.output and "build" in r.output


def test_a_broken_plugin_is_one_warning_not_a_broken_cli(monkeypatch, capsys):
    class Broken:
        name, value = "broken", "nowhere.cli:register"

        def load(self):
            raise ImportError("No module named 'nowhere'")

    class Good:
        name, value = "good", "tests:register"

        def load(self):
            return lambda target: target.command(name="hello")(lambda: typer.echo("hi"))

    target = typer.Typer()
    target.command(name="other")(lambda: None)
    monkeypatch.setattr(cli, "app", target)
    monkeypatch.setattr(cli, "entry_points", lambda group: [Broken(), Good()])
    cli._load_plugins()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'broken'" in err and "nowhere" in err
    r = CliRunner().invoke(target, ["hello"])
    assert r.exit_code == 0 and r.output == "hi\n"
