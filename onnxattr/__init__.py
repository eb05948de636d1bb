"""onnxattr: label-free model transferability from attribution maps, for any ONNX model.

Stages, one package or module group each:

- ``onnxattr.onnxgraph`` — the ONNX stage: truncate at an encoder node, fix up, convert to torch.
- ``onnxattr.attribution`` — attribution methods (saliency, gradient×input, ε-LRP, LRP).
- ``onnxattr.probe``, ``onnxattr.preprocess``, ``onnxattr.space``, ``onnxattr.pipeline`` — the
  probe set, each model's preprocessing, the HDF5 model space and the ``add`` pipeline.
- ``onnxattr.analysis`` — distances, estimators, evaluation, trees, plots, report.

The public API (``onnxattr.api``, re-exported here; see the README)::

    import onnxattr

    onnxattr.build_probe("photos/", size=224, n=1000, space="space.h5")
    onnxattr.add("space.h5", "model.onnx", "res4b", preprocessing="imagenet")
    aff = onnxattr.affinity("space.h5", "elrp")        # LabelledMatrix: .names, .values
    onnxattr.rank(aff, "resnet50")                       # [Neighbour(name, distance, affinity)]
    onnxattr.evaluate("space.h5", "transfers.csv")       # [Evaluation] per estimator
    onnxattr.report("space.h5", "report.html")

Extension points (one decorator each, at the definition): ``register_method`` (attribution),
``register_rule`` / ``register_preset`` (LRP), ``register_estimator``, ``register_fixup``,
``onnxattr.onnxgraph.converters.register_converter``; see docs/extending.md. Names resolve lazily, so
``import onnxattr`` stays light (torch loads with the first call that needs it).
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

#: Public name -> the module that defines it (imported on first access).
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("build_probe", "add", "models", "methods", "estimators", "default_estimator",
         "affinity", "distances", "rank", "Neighbour", "evaluate", "report", "method_parameters",
         "stability", "agreement", "tree", "heatmap", "Tree", "add_many", "is_manifest", "check",
         "salvage", "migrate", "sketch", "check_features", "nodes", "transfer_target",
         "measure_transfer", "estimate_transfer", "bench"),
        "onnxattr.api",
    ),
    "OnnxAttrError": "onnxattr.errors",
    "ModelSpace": "onnxattr.space",
    "MapStorage": "onnxattr.space",
    "ProbeSet": "onnxattr.probe",
    "Preprocessing": "onnxattr.preprocess",
    "AddResult": "onnxattr.pipeline",
    "LabelledMatrix": "onnxattr.analysis.distances",
    "read_matrix_csv": "onnxattr.analysis.distances",
    "write_matrix": "onnxattr.analysis.distances",
    "Evaluation": "onnxattr.analysis.evaluation",
    "Oracle": "onnxattr.analysis.evaluation",
    "Stability": "onnxattr.analysis.stability",
    "read_oracle": "onnxattr.analysis.evaluation",
    "register_method": "onnxattr.attribution",
    "AttributionMethod": "onnxattr.attribution",
    "register_rule": "onnxattr.attribution",
    "register_preset": "onnxattr.attribution",
    "register_estimator": "onnxattr.analysis.estimators",
    "register_fixup": "onnxattr.onnxgraph.fixups",
    "Fix": "onnxattr.onnxgraph.fixups",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'onnxattr' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
