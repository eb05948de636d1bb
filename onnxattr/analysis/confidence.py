"""How sure an answer is, in two marks that `rank`, the report, the explorer and the demo share.

**≈ — cannot be told apart.** For a target, a ranked source cannot be told apart from the source
just above it when it scores level with or above that source in at least :data:`TIE_SHARE` (2.5%)
of the probe resamples of :func:`~onnxattr.analysis.stability.ranking_stability`. Every resample
scores both sources on the same images, so this is a paired comparison: the order is kept at the
95% level (two-sided) only when the resampled affinity difference upper − lower stays above zero
in more than 97.5% of the draws. Overlapping 95% rank or affinity intervals, the explorer's
earlier rule, compare two marginal intervals instead: when a probe draw moves both sources
together (they share the images), their intervals overlap although the order never flips, and
integer rank intervals of one source also move with every other source. A run of ≈ rows is a
group; its ends need not be ≈ each other (the rule is between neighbours).

**≠ — estimators disagree.** For a target, estimators disagree when their closest sources differ,
or when two of them order the target's sources more often oppositely than alike (Kendall τ below
:data:`TAU_MIN` = 0). Which estimators: those asked for, else :func:`comparison_estimators` (the
default and the paper's methods).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import kendalltau

from ..errors import OnnxAttrError
from .distances import LabelledMatrix
from .selection import DEFAULT_ESTIMATOR
from .stability import Stability

#: A source scoring level with or above the one above it in at least this fraction of probe
#: resamples cannot be told apart from it (the 95% two-sided paired comparison).
TIE_SHARE = 0.025
#: Estimators whose rankings of a target's sources correlate below this (Kendall τ) disagree.
TAU_MIN = 0.0
#: The paper's attribution methods (Song et al. 2019): checked against the default.
PAPER_METHODS = ("saliency", "grad_input", "elrp")
#: `rank` resamples by default (:data:`AUTO_BOOTSTRAP` draws) only in spaces of at most this
#: many models: the default estimator's resampling (SVCCA recomputed on every half-sample, for
#: every pair) took 2–5 s of CPU on the 6-model quick demo but 30–45 s on the 18-model full one.
AUTO_MAX_MODELS = 8
AUTO_BOOTSTRAP = 20


def auto_bootstrap(n_models: int) -> int:
    """Probe resamples `rank` draws when none are asked for: :data:`AUTO_BOOTSTRAP` where that
    is cheap (at most :data:`AUTO_MAX_MODELS` models), else none."""
    return AUTO_BOOTSTRAP if n_models <= AUTO_MAX_MODELS else 0


def ranking_order(affinity: np.ndarray) -> np.ndarray:
    """(N, N-1): each target's sources, most similar first, the target left out; equal scores
    keep matrix order, as :func:`~onnxattr.analysis.distances.ranking` does."""
    n = len(affinity)
    return np.array([[j for j in np.argsort(-affinity[i], kind="stable") if j != i]
                     for i in range(n)], dtype=np.int64).reshape(n, max(n - 1, 0))


def level_share(boot: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(N, K): per target and ranked source (``order``: (N, K) source indices), the fraction of
    resampled matrices ``boot`` (R, N, N) in which it scores level with or above the source
    ranked just above it; 0 for the first."""
    if boot.ndim != 3 or len(boot) == 0:
        raise OnnxAttrError("marking sources that cannot be told apart needs the resampled "
                            "matrices; compute the stability with bootstrap > 1")
    vals = boot[:, np.arange(len(order))[:, None], order]  # (R, N, K)
    share = np.zeros(order.shape)
    share[:, 1:] = np.mean(vals[:, :, 1:] >= vals[:, :, :-1], axis=0)
    return share


@dataclass(frozen=True)
class Ties:
    """Per target: its sources closest first and which cannot be told from the one above."""

    names: list[str]
    order: np.ndarray  # (N, N-1) source indices, closest first
    share: np.ndarray  # (N, N-1) :func:`level_share`
    n_boot: int

    @property
    def tied(self) -> np.ndarray:
        """(N, N-1) bool: cannot be told apart from the source above (:data:`TIE_SHARE`)."""
        return self.share >= TIE_SHARE

    def ranked(self, target: str) -> list[tuple[str, float, bool]]:
        """``target``'s sources closest first: (name, level share, cannot be told from the one
        above)."""
        i = self.names.index(target)
        return [(self.names[j], float(s), bool(t))
                for j, s, t in zip(self.order[i], self.share[i], self.tied[i], strict=True)]

    def groups(self, target: str) -> list[list[str]]:
        """``target``'s sources in runs of ≈ neighbours, closest run first."""
        out: list[list[str]] = []
        for name, _, tied in self.ranked(target):
            if tied and out:
                out[-1].append(name)
            else:
                out.append([name])
        return out

    def legend(self) -> str:
        return (f"≈: cannot be told apart from the source above (scores level with or above it "
                f"in at least {TIE_SHARE:.1%} of {self.n_boot} probe resamples)")


def source_ties(stab: Stability) -> Ties:
    """The ≈ marks of every target's ranking from ``stab``'s resampled matrices."""
    order = ranking_order(stab.affinity)
    return Ties(list(stab.names), order, level_share(stab.boot, order), stab.n_boot)


def comparison_estimators(names: Sequence[str]) -> list[str]:
    """Of ``names``, the default estimator and the paper's methods: what the disagreement mark
    compares when no estimators are named."""
    return [n for n in names if n == DEFAULT_ESTIMATOR or n in PAPER_METHODS]


@dataclass(frozen=True)
class Disagreement:
    """Whether estimators rank one target's sources alike."""

    target: str
    first: dict[str, str]  # estimator -> its closest source
    top3: dict[str, list[str]]
    min_tau: float  # lowest Kendall τ of two estimators' orders of the common sources (NaN: none)

    @property
    def disagree(self) -> bool:
        return len(set(self.first.values())) > 1 or bool(self.min_tau < TAU_MIN)

    def line(self) -> str:
        """``≠ estimators disagree on m0: saliency → a, elrp → b (lowest Kendall τ 0.20)`` or
        ``estimators agree on m0: all 3 put a first (...)``."""
        tau = "" if math.isnan(self.min_tau) else f" (lowest Kendall τ between two: {self.min_tau:.2f})"
        if not self.disagree:
            return (f"estimators agree on {self.target}: all {len(self.first)} put "
                    f"{next(iter(self.first.values()))} first{tau}")
        return (f"≠ estimators disagree on {self.target}: "
                + ", ".join(f"{e} → {s}" for e, s in self.first.items()) + tau)


def disagreement(matrices: Sequence[LabelledMatrix], target: str) -> Disagreement:
    """How the estimators of ``matrices`` (two or more) rank ``target``'s sources, over the
    sources every matrix holds."""
    if len(matrices) < 2:
        raise OnnxAttrError(f"comparing estimators needs at least two matrices, got {len(matrices)}")
    missing = [m.estimator for m in matrices if target not in m.names]
    if missing:
        raise OnnxAttrError(f"{target!r} is not in the matrices of {', '.join(missing)}; "
                            "compare estimators on a target they all rank")
    common = [n for n in matrices[0].names if n != target and all(n in m.names for m in matrices)]
    if not common:
        raise OnnxAttrError(f"the estimators share no source for {target!r}")
    scores = {}
    for m in matrices:
        row = m.scores()[m.index(target)]
        scores[m.estimator] = np.array([row[m.index(n)] for n in common], dtype=np.float64)
    tops = {e: [common[j] for j in np.argsort(-s, kind="stable")[:3]] for e, s in scores.items()}
    taus = ([kendalltau(a, b).statistic for a, b in combinations(scores.values(), 2)]
            if len(common) > 1 else [])
    taus = [t for t in taus if not math.isnan(t)]
    return Disagreement(target, {e: t[0] for e, t in tops.items()}, tops,
                        float(min(taus)) if taus else math.nan)


def disagreements(matrices: Sequence[LabelledMatrix]) -> list[Disagreement]:
    """:func:`disagreement` for every target all ``matrices`` rank, in the first one's order
    (none when they share fewer than two models)."""
    shared = [t for t in matrices[0].names if all(t in m.names for m in matrices[1:])]
    return [disagreement(matrices, t) for t in shared] if len(shared) > 1 else []
