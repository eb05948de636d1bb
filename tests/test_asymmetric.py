"""Directed estimators (`predict`, `coverage`, `rankme`): the dual-form ridge against a naive
primal one, the (target, source) orientation on a case whose answer is known, coverage as predict's
column means, and RankMe by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from onnxattr.analysis.directed import ALPHAS, effective_rank, fold_ids, predictivity_matrix
from onnxattr.analysis.estimators import compute_affinity
from onnxattr.analysis.evaluation import Oracle, evaluate
from onnxattr.errors import OnnxAttrError
from tests.space_factory import add_model, create_space


def _naive_r2(x: np.ndarray, y: np.ndarray, folds: int) -> float:
    """Primal ridge per fold, GCV from the explicit hat matrix on the training rows."""
    ids = fold_ids(len(x), folds)
    sse = sst = 0.0
    for k in range(folds):
        tr, te = ids != k, ids == k
        xt, yt = x[tr] - x[tr].mean(0), y[tr] - y[tr].mean(0)
        n, d = xt.shape
        scale = np.trace(xt @ xt.T) / n
        best = None
        for a in ALPHAS:
            lam = a * scale
            hat = xt @ np.linalg.solve(xt.T @ xt + lam * np.eye(d), xt.T)
            gcv = n * np.sum((yt - hat @ yt) ** 2) / (n - np.trace(hat)) ** 2
            if best is None or gcv < best[0]:
                best = (gcv, lam)
        w = np.linalg.solve(xt.T @ xt + best[1] * np.eye(d), xt.T @ yt)
        pred = (x[te] - x[tr].mean(0)) @ w + y[tr].mean(0)
        sse += np.sum((y[te] - pred) ** 2)
        sst += np.sum((y[te] - y[tr].mean(0)) ** 2)
    return 1 - sse / sst


def test_predictivity_matches_naive_primal_ridge() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(30, 4))
    xs = [z @ rng.normal(size=(4, 6)) + 0.5 * rng.normal(size=(30, 6)),
          z[:, :2] @ rng.normal(size=(2, 9)) + rng.normal(size=(30, 9)),
          rng.normal(size=(30, 3))]
    a = predictivity_matrix(xs, folds=4)
    for t in range(3):
        for s in range(3):
            want = 1.0 if s == t else _naive_r2(xs[s], xs[t], 4)
            assert a[t, s] == pytest.approx(want, abs=1e-8)


def test_superset_source_predicts_target_not_the_reverse(tmp_path: Path) -> None:
    """`big` holds `small`'s features plus as many independent ones: big predicts small well
    (A[small, big] near 1), small predicts half of big's variance at most."""
    rng = np.random.default_rng(1)
    n = 60
    small = rng.normal(size=(n, 5))
    big = np.hstack([small, rng.normal(size=(n, 5))])
    other = rng.normal(size=(n, 5))
    space = create_space(tmp_path / "s.h5", n, 4)
    for name, x in (("big", big), ("other", other), ("small", small)):
        add_model(space, name, features=x)
    m, _ = compute_affinity(space, "predict", use_cache=False)
    i = {n: k for k, n in enumerate(m.names)}
    assert m.values[i["small"], i["big"]] > 0.9
    assert m.values[i["big"], i["small"]] < 0.55
    assert m.values[i["small"], i["other"]] < 0.1
    # evaluate reads rows as targets: for target small, big is the best source
    orc = Oracle(["small"], ["big", "other"], np.array([[1.0, 0.0]]))
    assert evaluate(m, orc, top=1).precision[0] == 1.0
    with pytest.raises(OnnxAttrError, match="directed"):
        compute_affinity(space, "predict+hub")
    comb, _ = compute_affinity(space, "combine:predict=1,rankme=1")
    assert comb.names == m.names and not np.allclose(comb.values, comb.values.T)
    # coverage: big holds small (and itself), so it covers the other models best; every row alike
    cov, _ = compute_affinity(space, "coverage", use_cache=False)
    off = ~np.eye(3, dtype=bool)
    want = np.array([m.values[:, s][off[:, s]].mean() for s in range(3)])
    np.testing.assert_allclose(cov.values, np.tile(want, (3, 1)))
    assert int(np.argmax(cov.values[0])) == i["big"]


def test_effective_rank_by_hand(tmp_path: Path) -> None:
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], float)
    x = np.hstack([h[:, 1:2], h[:, 2:3], 2 * h[:, 3:4]])  # centred orthogonal columns, norms 2,2,4
    p = np.array([0.25, 0.25, 0.5])
    assert effective_rank(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()) / 3)
    assert effective_rank(np.ones((4, 3))) == 0.0
    space = create_space(tmp_path / "s.h5", 4, 4)
    add_model(space, "a", features=x)
    add_model(space, "b", features=np.hstack([x[:, :1], x[:, :1]]))
    m, _ = compute_affinity(space, "rankme", use_cache=False)
    # column = source: the same quality of `a` for every target
    assert m.values[:, 0] == pytest.approx([effective_rank(x)] * 2)
    assert m.values[:, 1] == pytest.approx([0.5, 0.5])


def test_repeated_probe_images_count_once(tmp_path: Path) -> None:
    """A bootstrap resample repeats images: predict then equals predict on the distinct images
    (a repeat would otherwise sit in both training and held-out folds), and probe-bootstrap
    intervals run for both directed estimators."""
    from onnxattr.analysis.stability import ranking_stability

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 12)), rng.normal(size=(40, 12))
    b[:, :6] += a[:, :6]
    twice = np.r_[np.arange(40), np.arange(40)]
    np.testing.assert_allclose(predictivity_matrix([a[twice], b[twice]]),
                               predictivity_matrix([a, b]))
    space = create_space(tmp_path / "s.h5", 40, 4)
    for name, x in (("a", a), ("b", b), ("c", rng.normal(size=(40, 12)))):
        add_model(space, name, features=x)
    for est in ("predict", "coverage", "rankme"):
        stab = ranking_stability(space, est, n_boot=3)
        assert stab.boot.shape == (3, 3, 3) and np.isfinite(stab.boot).all()
