"""Attribution stage: methods registered by name, computed on a converted encoder graph."""

from . import lrp, methods  # noqa: F401  (registers the built-in methods)
from .base import METHODS, AttributionMethod, attribute, get_method, list_methods, register_method

__all__ = ["METHODS", "AttributionMethod", "attribute", "get_method", "list_methods", "register_method"]
