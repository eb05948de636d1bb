"""Selection helpers: per-target scores, leave-one-target-out, fitted weights, twin check."""

from __future__ import annotations

import numpy as np
import pytest

from onnxattr.analysis.distances import LabelledMatrix
from onnxattr.analysis.evaluation import Oracle, evaluate
from onnxattr.analysis.selection import (
    best_of,
    bootstrap_targets,
    fit_weight,
    leave_one_target_out,
    target_scores,
    twin_check,
)

NAMES = ["a", "b", "c", "d", "e", "f", "g"]


def _oracle(rng: np.random.Generator) -> tuple[Oracle, np.ndarray]:
    truth = rng.random((7, 7))
    truth = truth + truth.T
    return Oracle(NAMES[:4], NAMES, truth[:4]), truth


def test_target_scores_average_to_evaluate() -> None:
    rng = np.random.default_rng(0)
    oracle, _ = _oracle(rng)
    m = LabelledMatrix(NAMES, rng.random((7, 7)), "affinity", "x")
    sc = target_scores(m, oracle, top=2)
    ev = evaluate(m, oracle, top=2)
    mean = sc.mean()
    for k in (1, 3, 5):
        assert mean[f"P@{k}"] == pytest.approx(ev.precision[k - 1])
    assert mean["spearman"] == pytest.approx(ev.spearman)


def test_loto_never_sees_the_held_out_target() -> None:
    rng = np.random.default_rng(1)
    oracle, truth = _oracle(rng)
    good = LabelledMatrix(NAMES, truth, "affinity", "good")
    bad = LabelledMatrix(NAMES, -truth, "affinity", "bad")
    seen = []

    def choose(idx: list[int]) -> LabelledMatrix:
        seen.append(idx)
        scores = {"bad": target_scores(bad, oracle), "good": target_scores(good, oracle)}
        return {"good": good, "bad": bad}[best_of(scores, idx)]

    sel = leave_one_target_out(oracle, choose)
    assert [sorted(set(range(4)) - set(i)) for i in seen] == [[0], [1], [2], [3]]
    assert set(sel.chosen.values()) == {"good"}
    assert sel.mean()["P@1"] == 1.0


def test_fit_weight_uses_training_targets_only() -> None:
    rng = np.random.default_rng(2)
    oracle, truth = _oracle(rng)
    noise = LabelledMatrix(NAMES, rng.random((7, 7)) * 1e-3, "affinity", "noise")
    good = LabelledMatrix(NAMES, truth, "affinity", "good")
    w, m = fit_weight(noise, good, oracle, [0, 1, 2, 3])
    assert w < 0.5 and m.estimator.startswith("combine:noise=")
    assert target_scores(m, oracle).mean()["P@1"] == 1.0


def test_twin_check_counts_nearest_same_task_model() -> None:
    names = ["depth", "depth.keras", "normals", "normals.in32", "edges"]
    aff = np.array(
        [
            [1, 0.9, 0.5, 0.1, 0.1],
            [0.9, 1, 0.2, 0.1, 0.1],
            [0.5, 0.2, 1, 0.3, 0.1],
            [0.1, 0.1, 0.8, 1, 0.9],
            [0.1, 0.1, 0.1, 0.9, 1],
        ]
    )
    tasks = {
        "depth": "depth",
        "depth.keras": "depth",
        "normals": "normals",
        "normals.in32": "normals",
        "edges": "edges",
    }
    kinds = {"depth.keras": "framework", "normals.in32": "architecture/input"}
    out = twin_check(LabelledMatrix(names, aff), tasks, kinds)
    # depth.keras -> depth (hit); normals.in32 -> edges (0.9 beats normals' 0.8: miss)
    assert out == {"all": (1, 2), "framework": (1, 1), "architecture/input": (0, 1)}
    assert twin_check(LabelledMatrix(names, aff), tasks)["all"] == (2, 4)


def test_default_estimator_joins_the_default_list(tmp_path) -> None:
    from onnxattr.analysis.estimators import (
        available_estimators,
        compute_affinity,
        parse_combination,
    )
    from onnxattr.analysis.map_compare import parse_estimator
    from onnxattr.analysis.selection import DEFAULT_ESTIMATOR, with_default

    from .space_factory import random_space

    parts = [parse_estimator(e) for e, _ in parse_combination(DEFAULT_ESTIMATOR)]
    method = next(p.base for p in parts if p.base in ("saliency", "grad_input", "elrp"))
    random_space(tmp_path / "has.h5", n_models=3, size=16, methods=(method,))
    names = with_default(tmp_path / "has.h5", available_estimators(tmp_path / "has.h5"))
    assert names[-1] == DEFAULT_ESTIMATOR
    assert compute_affinity(tmp_path / "has.h5", DEFAULT_ESTIMATOR)[0].estimator == names[-1]
    other = next(m for m in ("saliency", "grad_input") if m != method)
    random_space(tmp_path / "lacks.h5", n_models=3, size=16, methods=(other,))
    lacks = available_estimators(tmp_path / "lacks.h5")
    assert with_default(tmp_path / "lacks.h5", lacks) == lacks  # no maps of the default's method


def test_bootstrap_over_targets_by_hand() -> None:
    """Per-target P@1 0, 0, 0, 1: a resampled mean is k/4 with k ~ Binomial(4, 1/4), so
    P(mean = 0) = 0.316 (lower 2.5 % point 0), P(mean >= 0.75) = 0.051 and P(mean = 1) = 0.004
    (upper 97.5 % point 0.75). A metric equal on every target has a zero-width interval."""
    ci = bootstrap_targets({"P@1": np.array([0.0, 0, 0, 1]), "rho": np.full(4, 0.3)})
    assert ci["P@1"] == (0.0, 0.75)
    assert ci["rho"] == pytest.approx((0.3, 0.3))


def test_target_scores_graded_metrics_per_target() -> None:
    rng = np.random.default_rng(2)
    oracle, truth = _oracle(rng)
    m = LabelledMatrix(NAMES, truth, "affinity", "perfect")  # the oracle itself, off-diagonal
    sc = target_scores(m, oracle, top=3)
    assert sc.wtau == pytest.approx(np.ones(4)) and sc.ndcg == pytest.approx(np.ones(4))
    rev = target_scores(LabelledMatrix(NAMES, -truth, "affinity", "rev"), oracle, top=3)
    assert rev.wtau == pytest.approx(-np.ones(4)) and (rev.ndcg < 0.5).all()


def test_committed_selection_tables_regenerate_from_their_json(tmp_path) -> None:
    """benchmarks/selection: selection.md and .csv are what the script writes from the committed
    selection.json, so every published figure traces back to per-target scores."""
    import json
    import shutil
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import select_estimators
    finally:
        sys.path.remove(str(root / "benchmarks"))
    src = root / "benchmarks" / "selection"
    shutil.copyfile(src / "selection.json", tmp_path / "selection.json")
    assert select_estimators.main(["--regenerate", "--out", str(tmp_path)]) == 0
    for name in ("selection.md", "selection.csv"):
        assert (tmp_path / name).read_text() == (src / name).read_text()
    r = json.loads((src / "selection.json").read_text())
    for name, by_oracle in r["per_target"].items():  # every mean is the mean of its targets
        for o, metrics in by_oracle.items():
            p3 = np.array(metrics["P@3"], dtype=float)
            assert r["table"][name][o]["P@3"] == pytest.approx(p3.mean())
