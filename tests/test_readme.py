"""The README and docs as a new user reads them: tables render, links resolve inside the repo,
and the export example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from onnxattr._compat import tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _tables(text: str) -> list[list[str]]:
    """Blocks of consecutive '|' lines outside code fences."""
    blocks, cur, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    return blocks + ([cur] if cur else [])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_tables_render(doc):
    """Every table starts with a header and a |---| separator: a blank line inside a table would
    leave the rows after it as plain text (the `lrp` row of the methods table did)."""
    for block in _tables(doc.read_text()):
        assert len(block) >= 2 and re.fullmatch(
            r"\|(\s*:?-+:?\s*\|)+", block[1].replace(" ", "")
        ), block[:2]
        width = block[0].count("|")
        assert all(row.count("|") - row.count("\\|") == width for row in block), block


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_point_into_the_repo(doc):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        assert (doc.parent / target).exists(), f"{doc.name}: {target}"


def test_no_file_points_outside_the_repo():
    """`shared/` is the authors' workspace, not part of the repository."""
    files = [
        *DOCS,
        *ROOT.glob("onnxattr/**/*.py"),
        *ROOT.glob("model_zoo/*.py"),
        *ROOT.glob("benchmarks/*.py"),
        ROOT / "noxfile.py",
    ]
    bad = [str(f.relative_to(ROOT)) for f in files if re.search(r"\bshared/", f.read_text())]
    assert not bad, bad


def _export_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "torch.onnx.export" in b
    )
    return block


def test_export_example_dependencies_are_required():
    """torch's default (dynamo) exporter needs onnxscript: it is a core dependency."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("onnxscript") for d in deps)
    assert "torch.onnx.export(" in _export_example() and "dynamo=False" not in _export_example()


@pytest.mark.slow
def test_export_example_runs_as_written(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", _export_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "resnet18.onnx").is_file()
    r = subprocess.run(
        [sys.executable, "-m", "onnxattr.cli", "nodes", "resnet18.onnx", "--candidates"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0 and "★" in r.stdout, r.stdout + r.stderr
