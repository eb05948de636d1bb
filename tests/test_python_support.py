"""The package (and its tests) run on the oldest Python pyproject's requires-python admits."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from onnxattr._compat import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SOURCES = sorted(
    p for d in ("onnxattr", "model_zoo", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")
) + [ROOT / "noxfile.py"]


def _oldest() -> tuple[int, int]:
    m = re.fullmatch(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"].strip())
    assert m, "requires-python is expected as '>=3.N'"
    return 3, int(m.group(1))


def test_sources_parse_with_the_oldest_supported_grammar():
    oldest = _oldest()
    for path in SOURCES:
        ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=oldest)


def test_tomllib_comes_through_the_compat_module_where_python_lacks_it():
    """tomllib is 3.11+: on an older supported Python, tomli (a core dependency there, with an
    environment marker) stands in, and nothing imports tomllib directly."""
    if _oldest() >= (3, 11):
        return
    deps = PYPROJECT["project"]["dependencies"]
    assert any(
        re.fullmatch(r"""tomli\b.*;\s*python_version\s*<\s*['"]3\.11['"]""", d) for d in deps
    ), deps
    direct = [
        str(p.relative_to(ROOT))
        for p in SOURCES
        if p.name != "_compat.py"
        and re.search(r"^\s*(import tomllib|from tomllib import)", p.read_text(), re.M)
    ]
    assert not direct, f"import tomllib via onnxattr._compat instead: {direct}"
