"""How a converter is filed with onnx2torch; apart from the package face, so that the op-family
modules the package imports never import the package back."""

from __future__ import annotations

from collections.abc import Callable

from onnx2torch.node_converters.registry import add_converter, get_converter
from onnx2torch.utils.common import OperationConverterResult

Converter = Callable[..., OperationConverterResult]  # (node, graph) -> result, as onnx2torch's


def register_converter(op: str, *versions: int, domain: str = "") -> Callable[[Converter], Converter]:
    """Decorator: file the converter with onnx2torch (its public ``add_converter``) for each
    ``version`` (the op's schema since_version) when the defining module is imported. A version
    onnx2torch already ships keeps onnx2torch's converter."""

    def decorate(converter: Converter) -> Converter:
        for version in versions:
            try:
                add_converter(operation_type=op, version=version, domain=domain)(converter)
            except ValueError:  # already there (a newer onnx2torch may ship it): keep theirs
                pass
        return converter

    return decorate


def existing_converter(op: str, version: int) -> Converter:
    """onnx2torch's converter of the op's schema current at opset ``version``."""
    return get_converter(operation_type=op, version=version, domain="")
