"""onnxattr: label-free model transferability from attribution maps, for any ONNX model.

Stages, one package or module group each:

- ``onnxattr.onnxgraph`` — the ONNX stage: truncate at an encoder node, fix up, convert to torch.
- ``onnxattr.attribution`` — attribution methods (saliency, gradient×input, ε-LRP, LRP).
- ``onnxattr.probe``, ``onnxattr.preprocess``, ``onnxattr.space``, ``onnxattr.pipeline`` — the
  probe set, each model's preprocessing, the HDF5 model space and the ``add`` pipeline.
- ``onnxattr.analysis`` — distances, estimators, evaluation, trees, plots, report.
"""

from __future__ import annotations


def _version() -> str:
    """The installed distribution's version, else the source tree's ``pyproject.toml`` one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxattr")
    except PackageNotFoundError:
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        match = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"))
        return match.group(1) if match else "0+unknown"


__version__: str = _version()

__all__ = ["__version__"]
