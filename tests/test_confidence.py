"""The ≈ rule (sources the probe cannot tell apart) and the ≠ mark (estimators that disagree)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxattr.analysis.confidence import (
    AUTO_MAX_MODELS,
    TIE_SHARE,
    Ties,
    disagreement,
    disagreements,
    level_share,
    ranking_order,
    source_ties,
)
from onnxattr.analysis.distances import LabelledMatrix, ranking
from onnxattr.analysis.estimators import compute_affinity
from onnxattr.analysis.stability import ranking_stability
from onnxattr.cli import app
from onnxattr.errors import OnnxAttrError

from .space_factory import add_model, create_space


def _target0(rows: list[list[float]]) -> np.ndarray:
    """(R, 3, 3) resampled matrices whose row 0 (target m0) scores m1 and m2 as ``rows``."""
    boot = np.zeros((len(rows), 3, 3))
    boot[:, 0, 1:] = rows
    return boot


def test_sources_moving_together_are_told_apart_though_their_intervals_overlap() -> None:
    # a probe draw shifts both affinities alike (shared images); m1 stays 0.05 above m2
    shift = np.linspace(-0.3, 0.3, 40)
    boot = _target0([[0.5 + s, 0.45 + s] for s in shift])
    lo, hi = np.percentile(boot[:, 0, 1:], [2.5, 97.5], axis=0)
    assert lo[0] < hi[1]  # the marginal 95% intervals overlap
    order = np.array([[1, 2], [0, 2], [0, 1]])
    share = level_share(boot, order)
    assert share[0].tolist() == [0.0, 0.0]


def test_one_flip_in_forty_resamples_is_a_tie_none_is_not() -> None:
    kept = [[0.6, 0.5]] * 40
    flipped = [[0.6, 0.5]] * 39 + [[0.5, 0.6]]
    order = np.array([[1, 2], [0, 2], [0, 1]])
    assert level_share(_target0(kept), order)[0, 1] == 0.0
    assert level_share(_target0(flipped), order)[0, 1] == pytest.approx(1 / 40)
    assert 1 / 40 >= TIE_SHARE > 0.0


def test_level_share_needs_the_resampled_matrices() -> None:
    with pytest.raises(OnnxAttrError, match="bootstrap > 1"):
        level_share(np.zeros(0), np.zeros((3, 2), dtype=np.int64))


def test_ranking_order_is_the_ranking() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 5))
    a[0, 3] = a[0, 1]  # equal scores keep matrix order
    m = LabelledMatrix([f"m{i}" for i in range(5)], a, "affinity", "x")
    order = ranking_order(a)
    for i, t in enumerate(m.names):
        assert [m.names[j] for j in order[i]] == [n for n, _ in ranking(m, t)]


def test_groups_are_runs_of_neighbours_that_cannot_be_told_apart() -> None:
    names = ["t", "a", "b", "c", "d"]
    order = np.array([[1, 2, 3, 4]] + [[0, 2, 3, 4]] * 4)
    share = np.zeros((5, 4))
    share[0] = [0.0, 0.3, 0.0, 0.02]  # b ≈ a; c clear of b; d clear of c (2% < 2.5%)
    ties = Ties(names, order, share, 50)
    assert ties.groups("t") == [["a", "b"], ["c"], ["d"]]
    assert [t for _, _, t in ties.ranked("t")] == [False, True, False, False]


def _twin_space(path: Path, m3_copies_m0_grad: bool = False) -> Path:
    """m1twin: an exact copy of m1; m2, m3 far from m0. grad_input: the saliency maps flipped
    (the same cosines), or (``m3_copies_m0_grad``) m3's a copy of m0's, so that grad_input puts
    m3 first for m0. elrp: the saliency maps; 16 px probes, so the default estimator applies."""
    rng = np.random.default_rng(0)
    create_space(path, 12, 16)
    base = rng.normal(size=(12, 16, 16))
    feats = rng.normal(size=(12, 16))
    for name, noise in (("m0", 0.0), ("m1", 0.3), ("m2", 1.5), ("m3", 3.0)):
        maps = base + noise * rng.normal(size=base.shape)
        f = feats + noise * rng.normal(size=feats.shape)
        grad = base[:, ::-1] if name == "m3" and m3_copies_m0_grad else maps[:, ::-1]
        methods = {"saliency": maps, "grad_input": grad, "elrp": maps}
        add_model(path, name, methods, f)
        if name == "m1":
            add_model(path, "m1twin", methods, f)
    return path


def test_exact_twins_cannot_be_told_apart(tmp_path: Path) -> None:
    space = _twin_space(tmp_path / "s.h5")
    ties = source_ties(ranking_stability(space, "saliency", n_boot=10, n_splits=0))
    (head, *rest) = ties.groups("m0")
    assert set(head) == {"m1", "m1twin"}
    assert all(len(g) == 1 for g in rest)  # m2, m3: clear of each other and of the twins


def _matrix(name: str, rows: dict[str, list[float]]) -> LabelledMatrix:
    names = list(rows)
    return LabelledMatrix(names, np.array([rows[n] for n in names], dtype=float), "affinity", name)


def test_estimators_disagree_on_a_different_first_source() -> None:
    a = _matrix("saliency", {"t": [1, .9, .5, .1], "x": [.9, 1, .5, .1], "y": [.5, .5, 1, .1],
                             "z": [.1, .1, .1, 1]})
    b = _matrix("elrp", {"t": [1, .5, .9, .1], "x": [.5, 1, .5, .1], "y": [.9, .5, 1, .1],
                         "z": [.1, .1, .1, 1]})
    d = disagreement([a, b], "t")
    assert d.disagree and d.first == {"saliency": "x", "elrp": "y"}
    assert d.line().startswith("≠ estimators disagree on t: saliency → x, elrp → y")
    same = disagreement([a, LabelledMatrix(a.names, a.values, "affinity", "other")], "t")
    assert not same.disagree and same.min_tau == pytest.approx(1.0)


def test_estimators_disagree_when_they_order_the_rest_oppositely() -> None:
    names = ["t", "a", "b", "c", "d", "e"]
    up = np.eye(6)
    up[0, 1:] = [.9, .8, .7, .6, .5]
    down = np.eye(6)
    down[0, 1:] = [.9, .5, .6, .7, .8]  # same first source, the other four reversed
    d = disagreement([LabelledMatrix(names, up, "affinity", "u"),
                      LabelledMatrix(names, down, "affinity", "v")], "t")
    assert d.first == {"u": "a", "v": "a"}
    assert d.min_tau == pytest.approx(-0.2) and d.disagree


def test_disagreement_compares_the_common_sources_only() -> None:
    a = _matrix("p", {"t": [1, .9, .2], "x": [.9, 1, .2], "gone": [.2, .2, 1]})
    b = _matrix("q", {"t": [1, .9, .3], "x": [.9, 1, .3], "y": [.3, .3, 1]})
    assert [d.target for d in disagreements([a, b])] == ["t", "x"]
    assert disagreement([a, b], "t").top3 == {"p": ["x"], "q": ["x"]}
    with pytest.raises(OnnxAttrError, match="not in the matrices of q"):
        disagreement([a, b], "gone")


def test_rank_marks_a_tie_and_says_whether_estimators_agree(tmp_path: Path) -> None:
    space = _twin_space(tmp_path / "s.h5")
    r = CliRunner().invoke(app, ["rank", "m0", "-s", str(space), "-m", "saliency",
                                 "--bootstrap", "10"])
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[2].strip(): line for line in r.output.splitlines()
            if line.count("│") > 4 and line.split("│")[2].strip().startswith("m")}
    assert ["≈" in rows[n] for n in ("m1", "m1twin", "m2", "m3")] == [False, True, False, False]
    assert "≈: cannot be told apart from the source above" in r.output
    # -m saliency against the default, grad_input (m0's maps flipped alike: same order), elrp
    assert "estimators agree on m0: all 4 put m1 first" in r.output
    fast = CliRunner().invoke(app, ["rank", "m0", "-s", str(space), "-m", "saliency",
                                    "--bootstrap", "0"])
    assert fast.exit_code == 0, fast.output
    assert "≈:" not in fast.output and "no ≈ marks" in fast.output


def test_report_reuses_given_resampling_and_shows_both_marks(tmp_path: Path, monkeypatch) -> None:
    from onnxattr.analysis import space_view
    from onnxattr.analysis.report import write_report

    space = _twin_space(tmp_path / "s.h5", m3_copies_m0_grad=True)
    stab = ranking_stability(space, "saliency", n_boot=10)
    resampled = []

    def counted(space, name, *args, **kwargs):
        resampled.append(name)
        return ranking_stability(space, name, *args, **kwargs)

    monkeypatch.setattr(space_view, "ranking_stability", counted)
    out = write_report(space, tmp_path / "r.html", estimators=["saliency", "grad_input"],
                       bootstrap=10, stabilities={"saliency": stab}, explorer=False)
    assert resampled == ["grad_input"]
    assert stab.boot.shape == (10, 5, 5)  # the caller's resampling is left whole
    html = out.read_text()
    assert "≈ m1twin" in html and "≈ m2" not in html
    assert "Do the estimators agree?" in html
    section = html.split("Do the estimators agree?")[1].split("<h2")[0]
    mats = [compute_affinity(space, e)[0] for e in ("saliency", "grad_input")]
    assert disagreement(mats, "m0").first == {"saliency": "m1", "grad_input": "m3"}
    assert section.count("≠</td>") == sum(d.disagree for d in disagreements(mats)) >= 1


def test_rank_resamples_by_default_only_in_small_spaces(tmp_path: Path) -> None:
    from .space_factory import random_space

    small = _twin_space(tmp_path / "small.h5")  # 5 models
    r = CliRunner().invoke(app, ["rank", "m0", "-s", str(small), "-m", "saliency"])
    assert r.exit_code == 0 and "≈: cannot be told apart" in r.output, r.output
    random_space(tmp_path / "big.h5", n_models=AUTO_MAX_MODELS + 1, n_probe=8)
    r = CliRunner().invoke(app, ["rank", "m0", "-s", str(tmp_path / "big.h5"), "-m", "saliency"])
    assert r.exit_code == 0, r.output
    assert "affinity 95%" not in r.output and "left out by default above 8 models" in r.output


def test_the_api_gives_the_same_marks_as_rank(tmp_path: Path) -> None:
    """`onnxattr.rank(bootstrap=...)` marks the twin as `rank` does; `onnxattr.agreement`
    gives the ≠ line's answer."""
    import onnxattr

    space = _twin_space(tmp_path / "s.h5")
    got = {nb.name: nb.tied for nb in onnxattr.rank(space, "m0", "saliency", bootstrap=10)}
    assert got == {"m1": False, "m1twin": True, "m2": False, "m3": False}
    assert all(nb.tied is None for nb in onnxattr.rank(space, "m0", "saliency"))
    with pytest.raises(OnnxAttrError, match="give the space"):
        onnxattr.rank(onnxattr.affinity(space, "saliency"), "m0", bootstrap=10)
    agree = onnxattr.agreement(space, "m0", ["saliency", "grad_input"])
    assert not agree.disagree and set(agree.first.values()) == {"m1"}
    assert onnxattr.agreement(space, "m0").first.keys() >= {"saliency", "grad_input"}
