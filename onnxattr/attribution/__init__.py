"""Attribution stage: methods registered by name, computed on a converted encoder (`TorchNet`).

Extension points: ``register_method`` (a new attribution method), ``register_rule`` (a new LRP
rule) and ``register_preset`` (a named LRP rule table); see docs/extending.md.
"""

from . import lrp, methods  # noqa: F401  (registers the built-in methods)
from .base import METHODS, AttributionMethod, attribute, get_method, list_methods, register_method
from .rule_table import PRESETS, base_table, register_preset
from .rules import RULES, ModifiedRule, Rule, feed, register_rule

__all__ = [
    "METHODS", "PRESETS", "RULES", "AttributionMethod", "ModifiedRule", "Rule", "attribute",
    "base_table", "feed", "get_method", "list_methods", "register_method", "register_preset",
    "register_rule",
]  # fmt: skip
