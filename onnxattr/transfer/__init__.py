"""Measured transfer: frozen source encoders of a space + one fixed head recipe → target scores."""

from .data import TargetTask, load_folder, teacher_target
from .estimates import ESTIMATES, EstimateResult, estimate_transfer, write_estimates
from .heads import fit_score, recipe
from .measure import TransferResult, measure_transfer, write_outputs
from .sources import EncoderRunner, load_sources

__all__ = [
    "ESTIMATES",
    "EncoderRunner",
    "EstimateResult",
    "TargetTask",
    "TransferResult",
    "estimate_transfer",
    "fit_score",
    "load_folder",
    "load_sources",
    "measure_transfer",
    "recipe",
    "teacher_target",
    "write_estimates",
    "write_outputs",
]
