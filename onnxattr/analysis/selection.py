"""Choosing an estimator honestly: per-target scores, leave-one-target-out selection, fitted
combination weights, and the twin check.

An estimator's score on one oracle target does not depend on the other targets, so a *fixed*
estimator scored on every target is already a held-out figure. What must not see a target is
whatever is *chosen* with the oracle: which variant becomes the default, and the weights of a
combined estimator. :func:`leave_one_target_out` chooses both on all targets but one and scores the
choice on the one left out, for every target in turn; the held-out P@K of the *procedure* is the
mean of those scores. Every per-target score (P@K, Spearman, weighted Kendall tau, nDCG@top) is
kept, so :func:`bootstrap_targets` can say how much the mean depends on which targets were drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .distances import LabelledMatrix
from .estimators import combine_matrices
from .evaluation import Oracle, evaluate, ndcg, target_rankings, weighted_tau

KS = (1, 3, 5)
#: The default estimator: ε-LRP maps (measured from mid-gray, the default reference) as |A| on a
#: 16×16 grid, rank-transformed, hubness-corrected, z-scored and weighted 0.5, plus hubness-corrected
#: SVCCA of the encoder outputs, 0.5. Chosen by ``benchmarks/select_worlds.py --zoo`` on the mini-
#: Taskonomy worlds 1+2 among the estimators that find a same-family nearest neighbour for at
#: least twice chance on the real zoo; on world 3, which nothing was chosen on, it beats the
#: previous default (``combine:saliency=0.6,svcca+hub=0.4``, world 0's choice) on every metric and
#: on the zoo (docs/estimators.md, ``benchmarks/worlds/gray_zoo/``).
DEFAULT_ESTIMATOR = "combine:elrp+abs+g16+rank+hub=0.5,svcca+hub=0.5"


def default_needs() -> tuple[list[str], int]:
    """What :data:`DEFAULT_ESTIMATOR` reads: its parts' base estimators (a method's maps, or
    features) and the finest common grid any part compares maps on (0: none)."""
    from .estimators import COMBINE_PREFIX, parse_combination
    from .map_compare import parse_estimator

    parts = (
        [e for e, _ in parse_combination(DEFAULT_ESTIMATOR)]
        if DEFAULT_ESTIMATOR.startswith(COMBINE_PREFIX)
        else [DEFAULT_ESTIMATOR]
    )
    specs = [parse_estimator(p) for p in parts]
    return [s.base for s in specs], max((s.comparison.grid for s in specs), default=0)


def with_default(space: str | Path, names: Sequence[str]) -> list[str]:
    """``names`` (a space's available estimators) plus :data:`DEFAULT_ESTIMATOR` when the space
    has what each of its parts reads (their base estimator, and maps at least as fine as any
    common grid) — what ``evaluate``/``report`` compare by default."""
    from ..space_reader import read_space

    if DEFAULT_ESTIMATOR in names:
        return list(names)
    bases, grid = default_needs()
    if any(b not in names for b in bases):
        return list(names)
    with read_space(space) as r:
        size = int(r.probe_attrs().get("size", 0))
    return [*names, DEFAULT_ESTIMATOR] if size >= grid else list(names)


def _finite_mean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


@dataclass
class TargetScores:
    """P@K (K in :data:`KS`), Spearman, weighted Kendall tau and nDCG of one estimator, per
    oracle target."""

    estimator: str
    targets: list[str]
    precision: dict[int, np.ndarray]  # K -> (T,)
    spearman: np.ndarray  # (T,), NaN where undefined
    wtau: np.ndarray  # (T,), NaN where undefined
    ndcg: np.ndarray  # (T,), nDCG@top with graded relevance

    def per_target(self) -> dict[str, np.ndarray]:
        """Metric name (as in :meth:`mean`) -> its (T,) per-target values."""
        out = {f"P@{k}": v for k, v in self.precision.items()}
        return {**out, "spearman": self.spearman, "wtau": self.wtau, "ndcg": self.ndcg}

    def mean(self, idx: Sequence[int] | None = None) -> dict[str, float]:
        sel = np.arange(len(self.targets)) if idx is None else np.asarray(idx, dtype=int)
        return {k: _finite_mean(v[sel]) for k, v in self.per_target().items()}


def target_scores(
    matrix: LabelledMatrix, oracle: Oracle, top: int = 5, mapping: Mapping[str, str] | None = None,
    families: Mapping[str, str] | None = None,
) -> TargetScores:
    """Score ``matrix`` against each oracle target on its own (same protocol as ``evaluate``;
    ``families``: rank families, not models)."""
    prec: dict[int, list[float]] = {k: [] for k in KS}
    rho, tau, gain = [], [], []
    for i, t in enumerate(oracle.targets):
        one = Oracle([t], oracle.sources, oracle.values[i : i + 1])
        ev = evaluate(matrix, one, top=top, mapping=mapping, families=families)
        for k in KS:
            prec[k].append(ev.precision[min(k, len(ev.k)) - 1])
        rho.append(ev.spearman)
        (_, truth, est), = target_rankings(matrix, one, mapping, families)[0]
        tau.append(weighted_tau(est, truth))
        gain.append(ndcg(est, truth, top))
    return TargetScores(
        matrix.estimator,
        list(oracle.targets),
        {k: np.array(v) for k, v in prec.items()},
        np.array(rho, dtype=float),
        np.array(tau, dtype=float),
        np.array(gain, dtype=float),
    )


def _key(s: dict[str, float], by: str) -> tuple[float, float]:
    rho = s["spearman"]
    return (s[by], rho if math.isfinite(rho) else -1.0)


def best_of(scores: Mapping[str, TargetScores], idx: Sequence[int], by: str = "P@3") -> str:
    """The estimator with the highest mean ``by`` over targets ``idx`` (ties: Spearman, then
    the order of ``scores``)."""
    best, key = "", (-math.inf, -math.inf)
    for name, sc in scores.items():
        k = _key(sc.mean(idx), by)
        if k > key:
            best, key = name, k
    return best


def fit_weight(
    a: LabelledMatrix,
    b: LabelledMatrix,
    oracle: Oracle,
    idx: Sequence[int],
    grid: Sequence[float] = tuple(np.round(np.linspace(0, 1, 11), 2)),
    by: str = "P@3",
    top: int = 5,
    mapping: Mapping[str, str] | None = None,
) -> tuple[float, LabelledMatrix]:
    """Weight w of ``combine:a=w,b=1-w`` with the best mean ``by`` over targets ``idx`` only."""
    best_w, best_key, best_m = 0.0, (-math.inf, -math.inf), None
    for w in grid:
        m = combine_matrices([a, b], [float(w), float(1 - w)])
        k = _key(target_scores(m, oracle, top, mapping).mean(idx), by)
        if k > best_key:
            best_w, best_key, best_m = float(w), k, m
    assert best_m is not None
    return best_w, best_m


@dataclass
class Selection:
    """Leave-one-target-out result: per held-out target, what was chosen and how it scored."""

    chosen: dict[str, str] = field(default_factory=dict)  # target -> estimator label
    precision: dict[int, list[float]] = field(default_factory=dict)
    spearman: list[float] = field(default_factory=list)
    wtau: list[float] = field(default_factory=list)
    ndcg: list[float] = field(default_factory=list)

    def per_target(self) -> dict[str, np.ndarray]:
        """Metric name -> its held-out value per scored target (in :attr:`chosen`'s order)."""
        out = {f"P@{k}": np.array(v, dtype=float) for k, v in self.precision.items()}
        return {**out, **{k: np.array(getattr(self, k), dtype=float)
                          for k in ("spearman", "wtau", "ndcg")}}

    def mean(self) -> dict[str, float]:
        return {k: _finite_mean(v) for k, v in self.per_target().items()}


def leave_one_target_out(
    oracle: Oracle,
    choose: Callable[[list[int]], LabelledMatrix],
    top: int = 5,
    mapping: Mapping[str, str] | None = None,
    score_on: Oracle | None = None,
) -> Selection:
    """For each target t: ``choose(train target indices)`` returns a matrix (chosen and fitted
    on the other targets only), which is then scored on t alone — in ``score_on`` (another
    oracle with the same target, e.g. other sources) when given."""
    sel = Selection(precision={k: [] for k in KS})
    n = len(oracle.targets)
    other = score_on or oracle
    for t in range(n):
        train = [i for i in range(n) if i != t]
        mat = choose(train)
        name = oracle.targets[t]
        if name not in other.targets:
            continue
        r = other.targets.index(name)
        one = Oracle([name], other.sources, other.values[r : r + 1])
        sc = target_scores(mat, one, top, mapping)
        sel.chosen[oracle.targets[t]] = mat.estimator
        for k in KS:
            sel.precision[k].append(float(sc.precision[k][0]))
        sel.spearman.append(float(sc.spearman[0]))
        sel.wtau.append(float(sc.wtau[0]))
        sel.ndcg.append(float(sc.ndcg[0]))
    return sel


def bootstrap_targets(per_target: Mapping[str, np.ndarray], n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals of each metric's mean over targets when the targets themselves are
    resampled with replacement (one draw of target indices shared by all metrics; NaN values
    left out of each mean): how much a figure depends on which targets the benchmark has."""
    n = len(next(iter(per_target.values())))
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for name, v in per_target.items():
        v = np.asarray(v, dtype=float)
        means = np.array([_finite_mean(v[d]) for d in draws])
        means = means[np.isfinite(means)]
        out[name] = ((float(np.percentile(means, lo)), float(np.percentile(means, hi)))
                     if means.size else (math.nan, math.nan))
    return out


def twin_check(
    matrix: LabelledMatrix, tasks: Mapping[str, str], kinds: Mapping[str, str] | None = None
) -> dict[str, tuple[int, int]]:
    """For every model with another model of the same task in the matrix: is a same-task model
    its nearest neighbour? With ``kinds``, only the models it names are checked, counted under
    their kind (e.g. framework, architecture/input, seed). Returns {kind: (first, cases)} and
    the total under "all"."""
    scores = matrix.scores()
    out: dict[str, list[int]] = {}
    for i, m in enumerate(matrix.names):
        task = tasks.get(m)
        mates = [j for j, o in enumerate(matrix.names) if o != m and tasks.get(o) == task]
        if not task or not mates or (kinds is not None and m not in kinds):
            continue
        row = scores[i].astype(float).copy()
        row[i] = -np.inf
        hit = int(int(np.argmax(row)) in mates)
        for kind in {"all", (kinds or {}).get(m, "all")}:
            c = out.setdefault(kind, [0, 0])
            c[0] += hit
            c[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}
