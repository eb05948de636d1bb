"""P@K / R@K protocol: hand-computed cases, the Taskonomy oracle, random matrices, name mapping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from onnxattr.analysis.distances import LabelledMatrix
from onnxattr.analysis.evaluation import (
    Oracle,
    evaluate,
    evaluations_json,
    ndcg,
    oracle_matrix,
    parse_mapping,
    read_oracle,
    weighted_tau,
)
from onnxattr.errors import OnnxAttrError

TASKONOMY = Path(__file__).resolve().parent / "data"
ORACLE_16K = TASKONOMY / "first_order_affinity_16k.csv"

NAN = math.nan


def small_case() -> tuple[LabelledMatrix, Oracle]:
    """3 targets (A, B, C) x 4 sources; relevant = top-2 per row. Worked by hand:
    A: oracle B>C>D -> rel {B, C}; estimate D, C, B -> hits 0, 1, 2
    B: oracle C>D>A -> rel {C, D}; estimate A, C, D -> hits 0, 1, 2
    C: oracle A>D>B -> rel {A, D}; estimate A, D, B -> hits 1, 2, 2
    """
    oracle = Oracle(["A", "B", "C"], ["A", "B", "C", "D"],
                    np.array([[NAN, 3, 2, 1], [1, NAN, 3, 2], [3, 1, NAN, 2]], dtype=float))
    est = np.array([[99, .1, .5, .9],   # the diagonal must be ignored, however large
                    [.9, 99, .8, .1],
                    [.7, .2, 99, .5],
                    [.3, .3, .3, 99]])
    return LabelledMatrix(list("ABCD"), est, "affinity", "est"), oracle


def test_hand_computed_case() -> None:
    m, oracle = small_case()
    ev = evaluate(m, oracle, top=2)
    assert ev.k == [1, 2, 3]
    np.testing.assert_allclose(ev.precision, [1 / 3, 4 / 6, 6 / 9])
    np.testing.assert_allclose(ev.recall, [1 / 6, 4 / 6, 6 / 6])
    np.testing.assert_allclose(ev.random_precision, [2 / 3] * 3)  # r/n = 2/3 for every K
    np.testing.assert_allclose(ev.random_recall, [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(ev.oracle_precision, [1, 1, 2 / 3])
    # Spearman per target: A -1, B -0.5 (d^2 = 6), C +1
    assert ev.spearman_per_target == pytest.approx({"A": -1.0, "B": -0.5, "C": 1.0})
    assert ev.spearman == pytest.approx(-1 / 6)
    assert ev.ignored == []


def test_distance_matrix_ranks_ascending() -> None:
    m, oracle = small_case()
    dist = LabelledMatrix(m.names, 1.0 / m.values, "distance", "d")
    assert evaluate(dist, oracle, top=2).precision == pytest.approx(
        evaluate(m, oracle, top=2).precision)


def test_unmeasured_cells_are_not_candidates() -> None:
    m, oracle = small_case()
    oracle.values[0, 3] = NAN  # A <- D not measured: A ranks only B, C, so both hit at K = 2
    ev = evaluate(m, oracle, top=2)
    # A: estimate C, B -> hits 1, 2, 2 ; B: 0, 1, 2 ; C: 1, 2, 2
    np.testing.assert_allclose(ev.precision, [2 / 3, 5 / 6, 6 / 9])
    # random: A has n = 2, r = 2 -> E hits = min(K, 2)
    np.testing.assert_allclose(ev.random_precision[0], (1 + 2 / 3 + 2 / 3) / 3)


def test_taskonomy_oracle_scores_itself_perfectly() -> None:
    oracle = read_oracle(ORACLE_16K)
    assert len(oracle.targets) == 18 and len(oracle.sources) == 20
    ev = evaluate(oracle_matrix(oracle), oracle)
    assert len(ev.precision) == 19
    assert ev.precision[:5] == pytest.approx([1.0] * 5)
    assert ev.precision == pytest.approx(ev.oracle_precision)
    assert ev.recall[4] == pytest.approx(1.0)
    assert ev.precision[5] == pytest.approx(5 / 6)  # 5 hits in 6 guesses
    assert ev.random_precision == pytest.approx([5 / 19] * 19)
    assert ev.spearman == pytest.approx(1.0)


def test_random_matrices_average_five_nineteenths() -> None:
    oracle = read_oracle(ORACLE_16K)
    rng = np.random.default_rng(1)
    n = len(oracle.names)
    prec = np.mean([evaluate(LabelledMatrix(oracle.names, rng.random((n, n))), oracle).precision
                    for _ in range(150)], axis=0)
    assert prec.shape == (19,)
    np.testing.assert_allclose(prec, 5 / 19, atol=0.03)
    assert prec[-1] == pytest.approx(5 / 19)  # K = 19: every source is predicted


def test_name_mapping_and_unmatched_error(tmp_path: Path) -> None:
    m, oracle = small_case()
    renamed = LabelledMatrix(["a_model", "B", "C", "D", "extra"],
                             np.pad(m.values, ((0, 1), (0, 1))), "affinity", "est")
    with pytest.raises(OnnxAttrError, match=r"fewer than two.*not in the oracle: p, q;.*`mapping`"):
        evaluate(LabelledMatrix(["p", "q"], np.eye(2)), oracle, top=2)
    ev = evaluate(renamed, oracle, top=2, mapping={"a_model": "A"})
    np.testing.assert_allclose(ev.precision, [1 / 3, 4 / 6, 6 / 9])
    assert ev.ignored == ["extra"]
    js = tmp_path / "map.json"
    js.write_text('{"a_model": "X"}')
    assert parse_mapping(["a_model=A", "B = B2"], js) == {"a_model": "A", "B": "B2"}
    with pytest.raises(OnnxAttrError, match="MATRIX_NAME=ORACLE_NAME"):
        parse_mapping(["nonsense"])


def test_json_shape() -> None:
    m, oracle = small_case()
    ev = evaluate(m, oracle, top=2)
    one = evaluations_json([ev])
    assert set(one) >= {"precision", "recall", "random_precision", "oracle_precision", "spearman"}
    two = evaluations_json([ev, evaluate(LabelledMatrix(m.names, m.values, estimator="x"),
                                         oracle, top=2)])
    assert set(two["estimators"]) == {"est", "x"}


def test_subset_of_the_oracle_is_evaluated_on_the_models_present() -> None:
    """Without the mapping, A is absent: the oracle is restricted to B, C, D (not an error).
    B ranks C, D and C ranks B, D: with relevant = top-2 every candidate is relevant, so P@K is 1
    for any ranking, random included, and the evaluation says so."""
    m, oracle = small_case()
    renamed = LabelledMatrix(["a_model", "B", "C", "D", "extra"],
                             np.pad(m.values, ((0, 1), (0, 1))), "affinity", "est")
    ev = evaluate(renamed, oracle, top=2)
    assert ev.left_out == ["A"] and ev.ignored == ["a_model", "extra"]
    assert ev.precision == pytest.approx([1.0, 1.0]) == ev.random_precision
    assert len(ev.warnings) == 1 and "2 of 2 targets" in ev.warnings[0]
    assert "random included" in ev.warnings[0]
    assert evaluate(renamed, oracle, top=1).warnings == []
    # top-1 by hand: B: oracle C(3) > D(2), estimate C .8 > D .1 -> hit; C: oracle D(2) > B(1),
    # estimate D .5 > B .2 -> hit
    assert evaluate(renamed, oracle, top=1).precision == pytest.approx([1.0, 0.5])


def test_restricted_taskonomy_equals_the_cut_oracle() -> None:
    oracle = read_oracle(ORACLE_16K)
    keep = oracle.names[2:11]
    rng = np.random.default_rng(3)
    mat = LabelledMatrix(keep, rng.random((len(keep), len(keep))), "affinity", "r")
    ev = evaluate(mat, oracle)
    cut = Oracle([t for t in oracle.targets if t in keep], [s for s in oracle.sources if s in keep],
                 oracle.values[np.ix_([i for i, t in enumerate(oracle.targets) if t in keep],
                                      [j for j, s in enumerate(oracle.sources) if s in keep])])
    ref = evaluate(mat, cut)
    assert ev.precision == ref.precision and ev.spearman == ref.spearman
    assert ev.left_out == [n for n in oracle.names if n not in keep] and ref.left_out == []
    assert len(ev.k) == len(keep) - 1 and ev.warnings == []


def test_ndcg_by_hand() -> None:
    truth = np.array([3.0, 1.0, 2.0, 0.0])  # gains after min-max: 1, 1/3, 2/3, 0
    est = np.array([0.5, 0.9, 0.1, 0.0])  # ranks sources 1, 0, 2, 3
    dcg = (1 / 3) / math.log2(2) + 1 / math.log2(3)
    ideal = 1 / math.log2(2) + (2 / 3) / math.log2(3)
    assert ndcg(est, truth, k=2) == pytest.approx(dcg / ideal)
    assert ndcg(truth, truth, k=3) == pytest.approx(1.0)
    assert math.isnan(ndcg(est, np.ones(4)))


def test_weighted_tau_weights_the_top() -> None:
    truth = np.arange(8.0)[::-1]
    assert weighted_tau(truth, truth) == pytest.approx(1.0)
    assert weighted_tau(-truth, truth) == pytest.approx(-1.0)
    top_swap, bottom_swap = truth.copy(), truth.copy()
    top_swap[[0, 1]] = top_swap[[1, 0]]
    bottom_swap[[6, 7]] = bottom_swap[[7, 6]]
    assert weighted_tau(top_swap, truth) < weighted_tau(bottom_swap, truth) < 1.0
    assert math.isnan(weighted_tau(np.zeros(8), truth))


def _family_case() -> tuple[LabelledMatrix, Oracle]:
    """Target t; family A = a1, a2, a3 (one task's twins) tops the oracle. By hand, top = 2:
    models: relevant {a1, a2}; estimate a1, b, a2, ... -> P@1 1, P@2 1/2.
    families: A (best 0.9, estimate 0.9), b (0.7, 0.8), c (0.1, 0.0); relevant {A, b};
    estimate A, b, c -> P@1 1, P@2 1."""
    names = ["t", "a1", "a2", "a3", "b", "c"]
    oracle = Oracle(["t"], names, np.array([[NAN, .9, .85, .8, .7, .1]]))
    est = np.eye(6)
    est[0, 1:] = [.9, .2, .1, .8, .0]
    return LabelledMatrix(names, est, "affinity", "e"), oracle


def test_families_count_once_by_their_best_member() -> None:
    m, oracle = _family_case()
    assert evaluate(m, oracle, top=2).precision[:2] == [1.0, 0.5]
    fam = {"a1": "A", "a2": "A", "a3": "A"}
    ev = evaluate(m, oracle, top=2, families=fam)
    assert ev.k == [1, 2, 3] and ev.precision == pytest.approx([1.0, 1.0, 2 / 3])
    assert ev.random_precision == pytest.approx([2 / 3] * 3)  # 2 relevant of 3 families
    # Spearman over families: estimate (0.9, 0.8, 0.0) against (0.9, 0.7, 0.1): same order
    assert ev.spearman == pytest.approx(1.0)
    # a family that holds the target: its other members are the candidates
    fam_t = {"t": "A", "a1": "A", "a2": "A", "a3": "A"}
    assert evaluate(m, oracle, top=2, families=fam_t).precision[:2] == [1.0, 1.0]


def test_evaluate_cli_ranks_families(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from onnxattr.cli import app

    m, oracle = _family_case()
    aff = tmp_path / "e_affinity.csv"
    oc = tmp_path / "oracle.csv"
    names = m.names
    aff.write_text("," + ",".join(names) + "\n" + "\n".join(
        n + "," + ",".join(str(v) for v in row) for n, row in zip(names, m.values)) + "\n")
    oc.write_text("," + ",".join(names) + "\nt,," + ",".join(str(v) for v in oracle.values[0, 1:])
                  + "\n")
    fam = tmp_path / "fam.json"
    fam.write_text('{"a1": "A", "a2": "A"}')
    r = CliRunner().invoke(app, ["evaluate", "--oracle", str(oc), "--affinity", str(aff),
                                 "--top", "2", "--family-file", str(fam), "--family", "a3=A",
                                 "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    assert "relevant = top-2 families" in r.output
    assert json.loads((tmp_path / "e.json").read_text())["precision"][:2] == [1.0, 1.0]
    bad = CliRunner().invoke(app, ["evaluate", "--oracle", str(oc), "--affinity", str(aff),
                                   "--family", "a3"])
    assert bad.exit_code == 1 and "write ORACLE_NAME=FAMILY" in bad.output, bad.output
