"""Every package that onnxattr imports at module level is a declared core dependency.

A fresh `pip install -e .` (the README's first command) has only those: an import of a package that
merely happens to be in the development environment (click came with ray, not with typer 0.29,
which vendors it) breaks `onnxattr` for every new user while the test suite passes.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from onnxattr._compat import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[\s<>=!~\[;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


def _module_level_imports(path: Path) -> set[str]:
    """Top-level names imported when the module is imported (not inside functions or classes)."""
    names = set()
    for node in ast.parse(path.read_text()).body:  # `try: import x` blocks are optional: skipped
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_module_level_imports_are_declared_dependencies():
    declared = _declared()
    dists = packages_distributions()
    missing = {}
    for path in sorted((ROOT / "onnxattr").rglob("*.py")):
        for name in _module_level_imports(path):
            if name in sys.stdlib_module_names or name in ("onnxattr", "__future__"):
                continue
            owners = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
            if not owners & declared:
                missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported at module level but not a core dependency: {missing}"
