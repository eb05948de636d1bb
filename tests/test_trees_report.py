"""Trees (hand-computed single linkage), figures, the HTML report and the analysis CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxattr.analysis import trees
from onnxattr.analysis.distances import LabelledMatrix, read_matrix_csv
from onnxattr.analysis.estimators import compute_affinity
from onnxattr.analysis.evaluation import read_oracle
from onnxattr.analysis.report import write_report
from onnxattr.cli import app
from onnxattr.errors import OnnxAttrError

from .space_factory import default_ready_space, random_space

AFF = LabelledMatrix(list("abcd"), [[1, .9, .1, .1], [.9, 1, .1, .1],
                                    [.1, .1, 1, .8], [.1, .1, .8, 1]], "affinity", "toy")


def newick_depths(text: str) -> dict[str, float]:
    """Root-to-leaf path lengths, by a tiny independent Newick parser."""
    depths: dict[str, float] = {}
    tokens = re.findall(r"\(|\)|,|;|[^():,;]+:[0-9.e+-]+|:[0-9.e+-]+", text)
    stack: list[list[str]] = [[]]
    lengths: dict[str, float] = {}
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            children = stack.pop()
            stack[-1].append(children)  # type: ignore[arg-type]
        elif tok.startswith(":"):
            node = stack[-1][-1]
            for leaf in _leaves(node):
                lengths[leaf] = lengths.get(leaf, 0.0) + float(tok[1:])
        elif tok not in (",", ";"):
            name, length = tok.rsplit(":", 1)
            stack[-1].append(name)
            lengths[name] = lengths.get(name, 0.0) + float(length)
    depths.update(lengths)
    return depths


def _leaves(node) -> list[str]:
    return [node] if isinstance(node, str) else [x for c in node for x in _leaves(c)]


def test_single_linkage_by_hand() -> None:
    # rows as points: |a-b| = sqrt(.02), |c-d| = sqrt(.08), across = sqrt(2.75)
    z = trees.linkage(AFF)
    np.testing.assert_allclose(z[:, 2], [math.sqrt(.02), math.sqrt(.08), math.sqrt(2.75)])
    text = trees.to_newick(z, AFF.names)
    assert text.endswith(";") and text.count("(") == text.count(")") == 3
    depths = newick_depths(text)
    assert sorted(depths) == list("abcd")
    for leaf in "abcd":  # ultrametric: every leaf sits at the root's merge height
        assert depths[leaf] == pytest.approx(math.sqrt(2.75), abs=1e-5)
    assert re.search(r"\((a:0\.141421,b:0\.141421|b:0\.141421,a:0\.141421)\)", text)
    order = trees.leaf_order(z)
    assert {frozenset(order[:2]), frozenset(order[2:])} == {frozenset({0, 1}), frozenset({2, 3})}


def test_matrix_linkage_and_errors() -> None:
    z = trees.linkage(AFF, "complete", on="matrix")  # d = 1 - A: a-b .1, c-d .2, across .9
    np.testing.assert_allclose(z[:, 2], [0.1, 0.2, 0.9])
    with pytest.raises(OnnxAttrError, match="unknown linkage"):
        trees.linkage(AFF, "nearest")
    with pytest.raises(OnnxAttrError, match="Euclidean"):
        trees.linkage(AFF, "ward", on="matrix")


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sp") / "space.h5"
    default_ready_space(path, n_models=5, n_probe=10, methods=("saliency", "elrp"))
    return path


@pytest.fixture(scope="module")
def oracle_csv(tmp_path_factory) -> Path:
    """Oracle over m0..m4 agreeing with the space's construction (closer index = better)."""
    names = [f"m{i}" for i in range(5)]
    path = tmp_path_factory.mktemp("or") / "oracle.csv"
    rows = ["target\\source," + ",".join(names)]
    for i, t in enumerate(names):
        rows.append(t + "," + ",".join("" if i == j else str(1.0 / (1 + abs(i - j) + 0.1 * j))
                                       for j in range(5)))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_report_is_self_contained(space: Path, oracle_csv: Path, tmp_path: Path) -> None:
    from onnxattr.analysis.selection import DEFAULT_ESTIMATOR

    out = write_report(space, tmp_path / "r.html", oracle=oracle_csv, top=2)
    page = out.read_text()
    # the space's estimators and the default (the space holds what its parts read)
    ests = ("saliency", "elrp", "svcca", "cka", "rsa", "relation", "depara:elrp", DEFAULT_ESTIMATOR)
    for est in ests:
        assert f"id='{est}'" in page
    # heatmap + tree each, + curves, + example maps
    assert page.count("data:image/png;base64,") == 2 * len(ests) + 2
    assert "Evaluation against the oracle" in page and "P@1" in page
    assert "<h2>Models</h2>" in page and "verify rel. err" in page
    # map estimators keep the bootstrap; those reading features (depara, and the default: svcca)
    # are half-sampled: repeated images bias them
    assert page.count("Probe stability (20 bootstrap draws") == 2
    assert page.count("Probe stability (20 recentred half-samples") == len(ests) - 2
    assert re.search(r"P@1</th>.*?\d\.\d{3} \[\d\.\d\d, \d\.\d\d\]", page)
    assert not re.search(r"(src|href)=['\"]https?:", page)
    plain = write_report(space, tmp_path / "p.html", estimators=["saliency"])
    assert "Evaluation" not in plain.read_text()


def run(*args: str) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def test_cli_distance_rank_tree_heatmap(space: Path, tmp_path: Path) -> None:
    r = run("distance", "--space", space, "--method", "saliency", "--out", tmp_path,
            "-f", "csv", "-f", "npy", "-f", "json")
    assert r.exit_code == 0, r.output
    aff = read_matrix_csv(tmp_path / "saliency_affinity.csv")
    dist = read_matrix_csv(tmp_path / "saliency_distance.csv", "distance")
    ref, _ = compute_affinity(space, "saliency", use_cache=False)
    np.testing.assert_allclose(aff.values, ref.values, rtol=1e-6)  # CSV: 7 significant digits
    np.testing.assert_allclose(dist.values, 1 / ref.values, rtol=1e-6)
    assert json.loads((tmp_path / "saliency_names.json").read_text()) == ref.names
    assert (tmp_path / "saliency_distance.npy").is_file()

    r = run("rank", "m0", "--space", space, "--method", "saliency")
    assert r.exit_code == 0, r.output
    rows = "\n".join(line for line in r.output.splitlines() if "│" in line)  # not the ≠ line
    listed = re.findall(r"\bm[1-4]\b", rows)
    expected = [n for n in np.array(ref.names)[np.argsort(-ref.values[0])] if n != "m0"]
    assert listed == expected
    r = run("rank", "m0", "--distance", tmp_path / "saliency_distance.csv", "--top", "2")
    assert re.findall(r"\bm[1-4]\b", r.output) == expected[:2]

    r = run("tree", "--affinity", tmp_path / "saliency_affinity.csv",
            "--out", tmp_path / "t.svg", "--linkage", "average")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t.svg").read_text().lstrip().startswith("<?xml")
    assert set(newick_depths((tmp_path / "t.nwk").read_text())) == set(ref.names)
    r = run("heatmap", "--space", space, "--method", "cka", "--out", tmp_path / "h.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_evaluate_and_report(space: Path, oracle_csv: Path, tmp_path: Path) -> None:
    r = run("evaluate", "--oracle", oracle_csv, "--space", space, "--method", "saliency",
            "--method", "cka", "--top", "2", "--json", tmp_path / "e.json",
            "--plot", tmp_path / "e.png")
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert set(data["estimators"]) == {"saliency", "cka"}
    assert len(data["estimators"]["saliency"]["precision"]) == 4
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"

    # a matrix with other names: error listing them, then fixed with --map
    aff, _ = compute_affinity(space, "saliency")
    lines = ["model," + ",".join(["M0", *aff.names[1:]])]
    lines += [n + "," + ",".join(map(repr, row))
              for n, row in zip(["M0", *aff.names[1:]], aff.values.tolist(), strict=True)]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    r = run("evaluate", "--oracle", oracle_csv, "--affinity", tmp_path / "a.csv")
    assert r.exit_code == 0, r.output  # evaluated on the 4 oracle models present
    assert "left out" in r.output and "m0" in r.output and "ignored: M0" in r.output
    r = run("evaluate", "--oracle", oracle_csv, "--affinity", tmp_path / "a.csv",
            "--map", "M0=m0", "--top", "2", "--json", tmp_path / "one.json")
    assert r.exit_code == 0, r.output
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["precision"] == pytest.approx(data["estimators"]["saliency"]["precision"])

    r = run("report", "--space", space, "--oracle", oracle_csv, "--top", "2",
            "--method", "elrp", "--out", tmp_path / "rep.html")
    assert r.exit_code == 0, r.output
    assert "data:image/png;base64," in (tmp_path / "rep.html").read_text()
    r = run("distance", "--space", tmp_path / "missing.h5", "--method", "saliency")
    assert r.exit_code == 1 and "does not exist" in r.output


def test_evaluate_without_method_is_one_readable_row_per_estimator(
    space: Path, oracle_csv: Path
) -> None:
    """Every estimator of the space (and the default) side by side at 80 columns: one row each
    with P@1/3/5 and Spearman, no cell cut short; the numbers are the API's."""
    from onnxattr import api

    r = run("evaluate", "--oracle", oracle_csv, "--space", space, "--top", "2")
    assert r.exit_code == 0, r.output
    assert "…" not in r.output and max(map(len, r.output.splitlines()[:-1])) <= 80
    rows = {line.split("│")[1].strip(): line for line in r.output.splitlines() if "│" in line}
    for est in ("saliency", "elrp", "svcca", "cka", "rsa", "relation", "depara:elrp"):
        ev = api.evaluate(space, read_oracle(oracle_csv), [est], top=2)[0]
        cells = [c.strip() for c in rows[est].split("│")[2:6]]
        p = [f"{ev.precision[k - 1]:.3f}" if k <= len(ev.precision) else "–" for k in (1, 3, 5)]
        assert cells == [*p, f"{ev.spearman:.3f}"]  # 4 candidate sources: no P@5
    assert "random (expected)" in rows and "oracle" in rows


def test_evaluate_and_report_on_a_subset_of_the_oracle(space: Path, tmp_path: Path) -> None:
    """The oracle knows 7 models, the space holds m0..m4 under other names for two of them:
    evaluate restricts the oracle to the models present (after --map), says which were left out,
    and warns when relevant = top-K covers every candidate (P@K = 1 for any ranking)."""
    names = ["m0", "m1", "m2", "model3", "model4", "absent_a", "absent_b"]
    rows = ["target\\source," + ",".join(names)]
    for i, t in enumerate(names):
        rows.append(t + "," + ",".join("" if i == j else str(1.0 / (1 + abs(i - j)))
                                       for j in range(len(names))))
    oracle = tmp_path / "big.csv"
    oracle.write_text("\n".join(rows) + "\n")
    maps = ["--map", "m3=model3", "--map", "m4=model4"]
    r = run("evaluate", "--oracle", oracle, "--space", space, "-m", "saliency", "--top", "2",
            "--json", tmp_path / "e.json", *maps)
    assert r.exit_code == 0, r.output
    assert "left out" in r.output and "absent_a, absent_b" in r.output
    assert "warning" not in r.output
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["left_out"] == ["absent_a", "absent_b"] and len(ev["precision"]) == 4
    r = run("evaluate", "--oracle", oracle, "--space", space, "-m", "saliency", "--top", "4",
            *maps)
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "P@K is 1 for any ranking" in r.output
    r = run("report", "--space", space, "--oracle", oracle, "--top", "4", "-m", "saliency",
            "--out", tmp_path / "rep.html", *maps)
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "absent_a" in r.output
    page = (tmp_path / "rep.html").read_text()
    assert "left out" in page and "absent_b" in page and "random included" in page


def test_report_template_is_package_data_and_autoescaped():
    """The page comes from a template shipped with the package; names from the space are escaped."""
    import fnmatch

    from onnxattr._compat import tomllib
    from onnxattr.analysis import report

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["onnxattr.analysis"]
    assert any(fnmatch.fnmatch("templates/report.html.j2", g) for g in globs)
    assert (Path(report.__file__).parent / "templates" / "report.html.j2").is_file()
    evil = "<script>x</script>"
    page = report.render_report({
        "title": evil, "stamp": "now", "linkage": "average", "explorer": None,
        "models": report._table(["model"], [[evil]]), "examples": None, "evaluation": None,
        "agreement": None, "sections": []})
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_api_tree_and_heatmap_are_what_the_commands_write(tmp_path):
    """`onnxattr.tree`/`heatmap` (a notebook's calls) and `onnxattr tree`/`heatmap` give the
    same Newick text and figures, and refuse a bad linkage alike."""
    import onnxattr
    from onnxattr.cli._app import cli_terms

    space = tmp_path / "s.h5"
    random_space(space, n_models=5)
    got = onnxattr.tree(space, "saliency", linkage="average", out=tmp_path / "api.svg")
    assert sorted(got.leaves) == sorted(got.names) and got.linkage.shape == (4, 4)
    assert (tmp_path / "api.svg").read_text().startswith("<?xml")
    r = CliRunner().invoke(app, ["tree", "-s", str(space), "-m", "saliency", "--linkage",
                                 "average", "-o", str(tmp_path / "cli.svg")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cli.nwk").read_text().strip() == got.newick
    assert onnxattr.heatmap(space, tmp_path / "h.png", "saliency").stat().st_size > 1000
    with pytest.raises(OnnxAttrError, match="use `on=rows`") as exc:
        onnxattr.tree(space, "saliency", linkage="ward", on="matrix")
    r = CliRunner().invoke(app, ["tree", "-s", str(space), "-m", "saliency", "--linkage", "ward",
                                 "--on", "matrix", "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and cli_terms(str(exc.value)) in " ".join(r.output.split())
