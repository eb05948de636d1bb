"""What the report and the explorer show of a model space, computed once for both: the models'
metadata, and per estimator its matrix, tree, probe-resampling stability and evaluation."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxAttrError
from ..space_reader import read_space
from . import trees
from .confidence import Disagreement, Ties, comparison_estimators, disagreements, source_ties
from .distances import DEFAULT_MEMORY_BYTES, LabelledMatrix
from .estimators import COMBINE_PREFIX, available_estimators, compute_affinity, describe
from .evaluation import Evaluation, Oracle, evaluate
from .map_compare import parse_estimator
from .selection import with_default
from .stability import EvaluationCI, Stability, evaluation_ci, ranking_stability


@dataclass(frozen=True)
class ModelInfo:
    """One model's metadata as stored by `add`."""

    name: str
    framework: str
    task: str
    encoder_node: str
    input_size: tuple[int, ...] | None
    verify_rel_err: float | None
    methods: tuple[str, ...]

    def cells(self) -> list[str]:
        """framework, task, encoder node, input size, verify error, maps: as table text."""
        return [self.framework or "–", self.task or "–", self.encoder_node or "–",
                "x".join(map(str, self.input_size)) if self.input_size else "–",
                "–" if self.verify_rel_err is None else f"{self.verify_rel_err:.1e}",
                ", ".join(self.methods) or "–"]


def read_models(space: str | Path) -> list[ModelInfo]:
    """Every model of ``space`` with its metadata, in storage order."""
    out = []
    with read_space(space) as r:
        for name in r.names():
            a = r.attrs(name)
            try:
                size = json.loads(a.get("preprocessing", "{}")).get("input_size")
            except (json.JSONDecodeError, AttributeError):
                size = None
            err = a.get("verify_rel_err")
            out.append(ModelInfo(name, str(a.get("framework", "") or ""), str(a.get("task", "") or ""),
                                 str(a.get("encoder_node", "") or ""),
                                 tuple(int(s) for s in size) if size else None,
                                 None if err is None else float(err),
                                 tuple(r.methods(name))))
    return out


def estimator_names(space: str | Path, estimators: Sequence[str] | None = None) -> list[str]:
    """``estimators``, or every one with data in ``space`` plus the default combination."""
    names = list(estimators) if estimators else with_default(space, available_estimators(space))
    if not names:
        raise OnnxAttrError(f"{space} has no estimator with data in two models; add models")
    return names


def map_method(estimators: Sequence[str], models: Sequence[ModelInfo]) -> str | None:
    """The attribution method whose maps to show: the first estimator's, else any stored."""
    have = list(dict.fromkeys(m for info in models for m in info.methods))
    bases = (parse_estimator(n).base for n in estimators if not n.startswith(COMBINE_PREFIX))
    return next((b for b in bases if b in have), have[0] if have else None)


def probe_examples(space: str | Path, names: Sequence[str], method: str, n_images: int = 4
                   ) -> tuple[list[int], np.ndarray, dict[str, np.ndarray]]:
    """``n_images`` probe images spread over the probe set (their indices, the images) and the
    ``method`` maps of them of every model in ``names`` that has them."""
    with read_space(space) as r:
        if not r.has_probe():
            return [], np.zeros((0, 1, 1, 3), np.uint8), {}
        n_probe = r.n_probe()
        idx = sorted(set(np.linspace(0, n_probe - 1, min(n_images, n_probe)).astype(int).tolist()))
        images = r.probe_images(idx)
        maps = {n: r.maps(n, method, idx) for n in names
                if r.has_model(n) and r.has_maps(n, method)}
    return idx, images, maps


@dataclass
class EstimatorView:
    """One estimator on a space: its matrix, similarity tree, stability and evaluation."""

    matrix: LabelledMatrix
    description: str
    linkage: np.ndarray
    stability: Stability | None = None
    ties: Ties | None = None  # ≈: sources the probe cannot tell apart (with stability)
    evaluation: Evaluation | None = None
    evaluation_ci: EvaluationCI | None = None

    @property
    def leaf_order(self) -> list[int]:
        return trees.leaf_order(self.linkage)


def estimator_views(space: str | Path, names: Sequence[str], oracle: Oracle | None = None, *,
                    mapping: Mapping[str, str] | None = None, top: int = 5,
                    linkage: str = trees.DEFAULT_LINKAGE, lam: float = 1.0,
                    use_cache: bool = True, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                    bootstrap: int = 20, progress: bool = False,
                    stabilities: Mapping[str, Stability] | None = None, **params: Any
                    ) -> Iterator[EstimatorView]:
    """One view per estimator of ``names``, computed as it is asked for (``bootstrap`` > 1:
    probe-resampling stability and ≈ marks; ``oracle``: evaluation, with intervals when
    resampled). ``stabilities``: resampling already computed (with ``boot``, the same parameters),
    by estimator name, used instead of resampling again (the demo's answer and its report)."""
    for name in names:
        matrix, _ = compute_affinity(space, name, lam=lam, use_cache=use_cache,
                                     memory_bytes=memory_bytes, progress=progress, **params)
        view = EstimatorView(matrix, describe(name).description, trees.linkage(matrix, linkage))
        if stabilities and name in stabilities:
            view.stability = stabilities[name]
        elif bootstrap > 1:
            view.stability = ranking_stability(space, name, n_boot=bootstrap, lam=lam,
                                               memory_bytes=memory_bytes, **params)
        if view.stability is not None:
            view.ties = source_ties(view.stability)
        if oracle is not None:
            view.evaluation = evaluate(matrix, oracle, top=top, mapping=mapping)
            if view.stability is not None:
                view.evaluation_ci = evaluation_ci(view.stability, oracle, top, mapping=mapping)
        if view.stability is not None:  # summarised: drop the B resampled N x N matrices
            view.stability = dataclasses.replace(view.stability, boot=np.zeros(0))
        yield view


def view_disagreements(views: Sequence[EstimatorView]) -> tuple[list[str], list[Disagreement]]:
    """Which estimators of ``views`` the ≠ mark compares (the default and the paper's methods
    among them; all when fewer than two of those) and, per target, whether they disagree."""
    names = [v.matrix.estimator for v in views]
    chosen = comparison_estimators(names)
    chosen = chosen if len(chosen) > 1 else names
    if len(chosen) < 2:
        return chosen, []
    return chosen, disagreements([v.matrix for v in views if v.matrix.estimator in chosen])


def rank_intervals(stab: Stability, target: int, order: Sequence[int]) -> np.ndarray:
    """(len(order), 2) integer 95% rank intervals of the sources ``order`` for ``target``."""
    lo = np.floor(stab.rank_low[target, list(order)])
    hi = np.ceil(stab.rank_high[target, list(order)])
    return np.stack([lo, hi], axis=1).astype(int)


def finite_or_none(v: float | None, digits: int = 4) -> float | None:
    """A JSON-safe rounded float (NaN and None: None)."""
    return None if v is None or not math.isfinite(v) else round(float(v), digits)
