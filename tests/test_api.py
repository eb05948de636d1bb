"""The public Python API: `import onnxattr` alone is enough for a notebook."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnxattr


def test_version_matches_pyproject() -> None:
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    expected = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject).group(1)
    assert onnxattr.__version__ == expected
    out = subprocess.run([sys.executable, "-c", "import onnxattr; print(onnxattr.__version__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
