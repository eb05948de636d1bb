"""What the oldest Python that pyproject's requires-python admits lacks, taken from PyPI there."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: tomli is the parser tomllib was made from (a core dependency on 3.10)
    import tomli as tomllib

__all__ = ["tomllib"]
