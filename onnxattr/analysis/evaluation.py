"""Score an estimated affinity/distance matrix against measured transfers (an "oracle").

Protocol of the paper (Song et al., NeurIPS 2019; the Taskonomy oracle: tests/data/README.md): for each oracle target (row), the
estimator ranks the other oracle sources (columns with a measured value; the target itself is
excluded) most-similar first. The relevant set is the oracle's top-``top`` sources of that row.
With hits(K) = sum over targets of |top-K predicted ∩ relevant|:
P@K = hits(K) / (T·K), R@K = hits(K) / sum_t |relevant_t|, for K = 1..N-1.
Also reported: the random ranking's expected curve (hypergeometric mean K·r/n per target), the
oracle's own curve, and the mean per-target Spearman correlation of estimate vs oracle.
Graded measures per target, which do not cut the oracle at its top-``top`` (:func:`target_rankings`
gives the pairs they read): :func:`weighted_tau` and :func:`ndcg`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr, weightedtau

from ..errors import OnnxAttrError
from .distances import LabelledMatrix, read_labelled_csv


@dataclass
class Oracle:
    """Measured transfer quality: ``values[i, j]`` = transfer from ``sources[j]`` to
    ``targets[i]``, higher = better; NaN = not measured."""

    targets: list[str]
    sources: list[str]
    values: np.ndarray

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.targets, *self.sources]))


def read_oracle(path: str | Path) -> Oracle:
    """Read a labelled CSV of target rows x source columns (empty cells = not measured)."""
    targets, sources, values = read_labelled_csv(path)
    return Oracle(targets, sources, values)


def parse_mapping(pairs: Sequence[str] = (), json_file: str | Path | None = None,
                  form: tuple[str, str] = ("matrix_name", "oracle_name")) -> dict[str, str]:
    """Name -> name pairs (matrix-name -> oracle-name renames by default; ``form`` names the two
    sides in messages) from ``OLD=NEW`` strings and/or a JSON object file."""
    key, value = form
    out: dict[str, str] = {}
    if json_file is not None:
        try:
            data = json.loads(Path(json_file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise OnnxAttrError(f"cannot read {json_file}: {exc}; "
                                f'give a JSON object like {{"{key}": "{value}"}}') from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise OnnxAttrError(f"{json_file} must hold a JSON object of {key} -> {value} strings")
        out.update(data)
    for p in pairs:
        old, sep, new = p.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise OnnxAttrError(f"bad pair {p!r}; write {key.upper()}={value.upper()}")
        out[old.strip()] = new.strip()
    return out


def rename(matrix: LabelledMatrix, mapping: Mapping[str, str]) -> LabelledMatrix:
    if not mapping:
        return matrix
    names = [mapping.get(n, n) for n in matrix.names]
    return LabelledMatrix(names, matrix.values, matrix.kind, matrix.estimator, matrix.excluded)


@dataclass
class Evaluation:
    estimator: str
    top: int
    k: list[int]
    precision: list[float]
    recall: list[float]
    random_precision: list[float]
    random_recall: list[float]
    oracle_precision: list[float]
    oracle_recall: list[float]
    spearman: float
    spearman_per_target: dict[str, float] = field(default_factory=dict)
    #: Matrix models the oracle does not know (not scored).
    ignored: list[str] = field(default_factory=list)
    #: Oracle models absent from the matrix: the oracle was restricted to the others.
    left_out: list[str] = field(default_factory=list)
    #: Why some numbers mean less than they seem (e.g. every candidate relevant: P@K = 1).
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spearman"] = None if math.isnan(self.spearman) else self.spearman
        d["spearman_per_target"] = {k: (None if math.isnan(v) else v)
                                    for k, v in self.spearman_per_target.items()}
        return d


def restrict(oracle: Oracle, names: Sequence[str]) -> Oracle:
    """The oracle on the models in ``names`` only: the rows and columns of the others dropped."""
    keep = set(names)
    rows = [i for i, t in enumerate(oracle.targets) if t in keep]
    cols = [j for j, s in enumerate(oracle.sources) if s in keep]
    return Oracle([oracle.targets[i] for i in rows], [oracle.sources[j] for j in cols],
                  oracle.values[np.ix_(rows, cols)])


def _check_names(matrix: LabelledMatrix, oracle: Oracle) -> tuple[list[str], list[str]]:
    """(matrix names not in the oracle, oracle names not in the matrix); an error when fewer than
    two oracle models are in the matrix, since nothing can then be ranked."""
    have, known = set(matrix.names), set(oracle.names)
    missing = [n for n in oracle.names if n not in have]
    extra = [n for n in matrix.names if n not in known]
    if len(known & have) < 2:
        raise OnnxAttrError(
            f"fewer than two oracle models are in the matrix; matrix names not in the oracle: "
            f"{', '.join(extra) or '(none)'}; oracle names: {', '.join(oracle.names)}; "
            "map names with `mapping` (matrix name -> oracle name)"
        )
    return extra, missing


def _check_finite(matrix: LabelledMatrix, oracle: Oracle) -> None:
    """NaN among the compared pairs would make rankings arbitrary and rho NaN: refuse instead."""
    idx = [matrix.names.index(n) for n in oracle.names]
    sub = matrix.values[np.ix_(idx, idx)]
    off = ~np.eye(len(idx), dtype=bool)
    bad = np.argwhere(np.isnan(sub) & off)
    if len(bad):
        pairs = ", ".join(f"{oracle.names[i]}/{oracle.names[j]}" for i, j in bad[:5])
        raise OnnxAttrError(
            f"{matrix.estimator or 'the matrix'} has {len(bad)} NaN values among the oracle's "
            f"models (e.g. {pairs}); recompute it (`onnxattr distance --no-cache`) or fill the CSV"
        )


def _hits(order: Sequence[int], relevant: set[int], kmax: int) -> np.ndarray:
    """hits[K-1] = |order[:K] ∩ relevant| for K = 1..kmax (order shorter than K: all of it)."""
    flags = np.array([j in relevant for j in order], dtype=float)
    cum = np.cumsum(flags) if len(flags) else np.zeros(0)
    return np.array([cum[min(k, len(cum)) - 1] if len(cum) else 0.0 for k in range(1, kmax + 1)])


def by_family(sources: Sequence[str], truth: np.ndarray, est: np.ndarray,
              families: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """One candidate per family (e.g. a task and its twins of other seeds, frameworks or
    architectures): measured transfer and estimate are each the best member's, so a family with
    many members fills one relevant slot, not several. Sources outside ``families`` are their own
    family; the result keeps the order of each family's first member."""
    keys = [families.get(s, s) for s in sources]
    order = list(dict.fromkeys(keys))
    pick = {k: [i for i, key in enumerate(keys) if key == k] for k in order}
    return (np.array([truth[pick[k]].max() for k in order]),
            np.array([est[pick[k]].max() for k in order]))


def target_rankings(matrix: LabelledMatrix, oracle: Oracle,
                    mapping: Mapping[str, str] | None = None,
                    families: Mapping[str, str] | None = None,
                    ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[str], list[str]]:
    """Per oracle target with measured candidates: (target, oracle values, matrix scores) over its
    candidate sources (measured, not the target itself; oracle column order), after renaming and
    restricting as :func:`evaluate` does; then the ignored and left-out names. Row = target,
    column = source in both the oracle and the matrix. With ``families`` (model -> family, after
    renaming), the candidates are families (:func:`by_family`)."""
    matrix = rename(matrix, mapping or {})
    ignored, left_out = _check_names(matrix, oracle)
    oracle = restrict(oracle, matrix.names)
    _check_finite(matrix, oracle)
    scores = matrix.scores()
    idx = {n: i for i, n in enumerate(matrix.names)}
    rows = []
    for t, target in enumerate(oracle.targets):
        cand = [j for j, s in enumerate(oracle.sources)
                if s != target and math.isfinite(oracle.values[t, j])]
        if cand:
            est = np.array([scores[idx[target], idx[oracle.sources[j]]] for j in cand])
            truth = oracle.values[t, cand]
            if families:
                truth, est = by_family([oracle.sources[j] for j in cand], truth, est, families)
            rows.append((target, truth, est))
    return rows, ignored, left_out


def weighted_tau(est: np.ndarray, truth: np.ndarray) -> float:
    """Weighted Kendall tau of the two rankings (Vigna 2015, ``scipy.stats.weightedtau``:
    hyperbolic weights 1/(r+1), averaged over ranking by either side): swaps among the top
    sources count most. NaN when either side is constant."""
    if len(est) < 2 or np.ptp(est) == 0 or np.ptp(truth) == 0:
        return math.nan
    return float(weightedtau(truth, est).statistic)


def ndcg(est: np.ndarray, truth: np.ndarray, k: int = 5) -> float:
    """nDCG@k with graded relevance: a candidate's gain is its measured transfer, min-max scaled
    over the target's candidates (best 1, worst 0), discounted by log2(rank + 1); the estimator's
    ranking over the oracle's (ties keep candidate order). NaN when all candidates tie."""
    truth = np.asarray(truth, dtype=np.float64)
    if np.ptp(truth) == 0:
        return math.nan
    gain = (truth - truth.min()) / np.ptp(truth)
    disc = 1.0 / np.log2(np.arange(2, min(k, len(gain)) + 2))
    dcg = gain[np.argsort(-np.asarray(est), kind="stable")][: len(disc)] @ disc
    return float(dcg / (np.sort(gain)[::-1][: len(disc)] @ disc))


def evaluate(matrix: LabelledMatrix, oracle: Oracle, top: int = 5,
             mapping: Mapping[str, str] | None = None,
             families: Mapping[str, str] | None = None) -> Evaluation:
    """P@K, R@K, random and oracle curves, and mean Spearman of ``matrix`` against ``oracle``.

    Matrix names are renamed with ``mapping`` first. The oracle is then restricted to the models
    present in the matrix (the others are listed in ``Evaluation.left_out``; relevance is the
    top-``top`` among the remaining sources); extra matrix models are ignored and listed in
    ``Evaluation.ignored``. Ties in either ranking keep the oracle's column order.
    ``Evaluation.warnings`` says when ``top`` covers every candidate of some targets, which makes
    their P@K 1 for any ranking, random included. ``families`` (model -> family, e.g. its task)
    ranks families instead of models: each counts once, by its best member on either side, so
    relevance is not crowded by one task's twins.
    """
    if top < 1:
        raise OnnxAttrError(f"`top` must be at least 1, got {top}")
    rows, ignored, left_out = target_rankings(matrix, oracle, mapping, families)
    if not rows:
        raise OnnxAttrError("the oracle has no measured target/source pairs; check the CSV")
    kmax = max(len(truth) for _, truth, _ in rows)
    hits, rand, orac = np.zeros(kmax), np.zeros(kmax), np.zeros(kmax)
    n_rel = 0
    rho: dict[str, float] = {}
    for target, truth, est in rows:
        o_order = np.argsort(-truth, kind="stable")
        relevant = set(o_order[:top].tolist())
        r, n = len(relevant), len(truth)
        n_rel += r
        hits += _hits(np.argsort(-est, kind="stable").tolist(), relevant, kmax)
        orac += _hits(o_order.tolist(), relevant, kmax)
        rand += np.array([min(k, n) * r / n for k in range(1, kmax + 1)])
        if n >= 2 and np.ptp(est) > 0 and np.ptp(truth) > 0:
            rho[target] = float(spearmanr(est, truth).statistic)
        else:
            rho[target] = math.nan  # a constant ranking has no defined correlation
    ks = np.arange(1, kmax + 1)
    n_t = len(rows)
    notes = []
    saturated = [target for target, truth, _ in rows if len(truth) <= top]
    if saturated:
        n_min = min(len(truth) for _, truth, _ in rows)
        notes.append(
            f"{len(saturated)} of {n_t} targets have at most {top} candidate sources "
            f"(fewest: {n_min}), so with relevant = top-{top} every candidate is relevant and "
            f"their P@K is 1 for any ranking, random included; use `top` below {n_min} or "
            "evaluate more models"
        )
    valid = [v for v in rho.values() if not math.isnan(v)]
    return Evaluation(
        estimator=matrix.estimator, top=top, k=ks.tolist(),
        precision=(hits / (n_t * ks)).tolist(), recall=(hits / n_rel).tolist(),
        random_precision=(rand / (n_t * ks)).tolist(), random_recall=(rand / n_rel).tolist(),
        oracle_precision=(orac / (n_t * ks)).tolist(), oracle_recall=(orac / n_rel).tolist(),
        spearman=float(np.mean(valid)) if valid else math.nan, spearman_per_target=rho,
        ignored=ignored, left_out=left_out, warnings=notes,
    )


def oracle_matrix(oracle: Oracle) -> LabelledMatrix:
    """The oracle as a square affinity matrix over all its names (unmeasured = -inf, diagonal 0),
    e.g. to score the oracle against itself."""
    names = oracle.names
    pos = {n: i for i, n in enumerate(names)}
    vals = np.full((len(names), len(names)), -np.inf)
    for i, t in enumerate(oracle.targets):
        for j, s in enumerate(oracle.sources):
            if math.isfinite(oracle.values[i, j]):
                vals[pos[t], pos[s]] = oracle.values[i, j]
    np.fill_diagonal(vals, 0.0)
    return LabelledMatrix(names, vals, "affinity", "oracle")


def evaluations_json(evals: Sequence[Evaluation]) -> dict[str, Any]:
    """One evaluation: its flat dict. Several: ``{"estimators": {name: flat dict}}``."""
    if len(evals) == 1:
        return evals[0].to_dict()
    return {"estimators": {e.estimator: e.to_dict() for e in evals}}
